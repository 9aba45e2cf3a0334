from django.urls import path

from dosing.reminders import views

urlpatterns = [
    path("reminders/", views.reminder_list, name="reminder-list"),
    path("participants/<int:pk>/reminders/opt-out/", views.participant_opt_out, name="participant-opt-out"),
]
