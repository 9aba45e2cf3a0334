from django.urls import path

from schedules import views

urlpatterns = [
    path(
        "participants/<int:pk>/visits/unscheduled/",
        views.unscheduled_visit_add,
        name="unscheduled-visit-add",
    ),
]
