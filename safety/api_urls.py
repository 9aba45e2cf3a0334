from django.urls import path

from safety import api, api_sae

urlpatterns = [
    path("participants/<int:pk>/adverse-events/", api.ParticipantAdverseEvents.as_view(), name="api-adverse-events"),
    path(
        "participants/<int:pk>/adverse-events/<int:sequence>/grade-change/",
        api.AdverseEventGradeChange.as_view(),
        name="api-adverse-event-grade-change",
    ),
    path(
        "participants/<int:pk>/adverse-events/<int:sequence>/resolve/",
        api.AdverseEventResolve.as_view(),
        name="api-adverse-event-resolve",
    ),
    path(
        "participants/<int:pk>/adverse-events/<int:sequence>/sae-reports/",
        api_sae.SaeReports.as_view(),
        name="api-sae-reports",
    ),
    path(
        "participants/<int:pk>/adverse-events/<int:sequence>/sae-reports/<int:version>/sign/",
        api_sae.SaeReportSign.as_view(),
        name="api-sae-report-sign",
    ),
    path(
        "participants/<int:pk>/adverse-events/<int:sequence>/susar-assessment/",
        api_sae.SusarAssessmentDetail.as_view(),
        name="api-susar-assessment",
    ),
    path(
        "participants/<int:pk>/adverse-events/<int:sequence>/susar-assessment/expedited-report/",
        api_sae.SusarExpeditedReport.as_view(),
        name="api-susar-expedited-report",
    ),
]
