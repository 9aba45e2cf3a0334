from django.urls import path

from safety import views

urlpatterns = [
    path("safety/report/", views.safety_report, name="safety-report"),
    path("safety/report/pdf/", views.safety_report_pdf, name="safety-report-pdf"),
    path("safety/closed-report/", views.closed_safety_report, name="safety-closed-report"),
    path("safety/closed-report/pdf/", views.closed_safety_report_pdf, name="safety-closed-report-pdf"),
    path("safety/susars/", views.susar_list, name="susar-list"),
    path("participants/<int:pk>/adverse-events/", views.adverse_event_list, name="adverse-event-list"),
    path(
        "participants/<int:pk>/adverse-events/<int:sequence>/",
        views.adverse_event_detail,
        name="adverse-event-detail",
    ),
]
