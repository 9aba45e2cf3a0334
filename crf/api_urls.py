from django.urls import path

from crf import api

urlpatterns = [
    path("participants/<int:pk>/forms/", api.ParticipantForms.as_view(), name="api-crf-forms"),
    path(
        "participants/<int:pk>/forms/<str:form_code>/<str:visit_code>/",
        api.VisitForm.as_view(),
        name="api-crf-visit-form",
    ),
    path("participants/<int:pk>/logs/<str:form_code>/", api.LogEntries.as_view(), name="api-crf-log"),
    path(
        "participants/<int:pk>/logs/<str:form_code>/<int:sequence>/", api.LogEntry.as_view(), name="api-crf-log-entry"
    ),
]
