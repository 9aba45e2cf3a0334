from django.urls import path

from randomization import views

urlpatterns = [
    path("participants/<int:pk>/randomize/", views.participant_randomize, name="participant-randomize"),
    path("participants/<int:pk>/unblind/", views.participant_unblind, name="participant-unblind"),
    path("randomization/lists/", views.list_index, name="randomization-lists"),
    path("randomization/lists/<int:pk>/", views.list_detail, name="randomization-list-detail"),
]
