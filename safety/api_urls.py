from django.urls import path

from safety import api

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
]
