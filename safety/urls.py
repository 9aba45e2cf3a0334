from django.urls import path

from safety import views

urlpatterns = [
    path("participants/<int:pk>/adverse-events/", views.adverse_event_list, name="adverse-event-list"),
    path(
        "participants/<int:pk>/adverse-events/<int:sequence>/",
        views.adverse_event_detail,
        name="adverse-event-detail",
    ),
]
