from django.urls import path

from schedules import api

urlpatterns = [
    path(
        "participants/<int:pk>/unscheduled-visits/",
        api.UnscheduledVisitAdd.as_view(),
        name="api-unscheduled-visit-add",
    ),
]
