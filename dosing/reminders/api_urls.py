from django.urls import path

from dosing.reminders import api

urlpatterns = [
    path("reminders/", api.ReminderList.as_view(), name="api-reminders"),
    path("participants/<int:pk>/reminders/opt-out/", api.ParticipantOptOut.as_view(), name="api-participant-opt-out"),
]
