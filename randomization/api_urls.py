from django.urls import path

from randomization import api

urlpatterns = [
    path("randomization/lists/", api.ListIndex.as_view(), name="api-randomization-lists"),
    path("randomization/lists/import/", api.ListImport.as_view(), name="api-randomization-list-import"),
    path("randomization/lists/<int:pk>/lock/", api.ListLock.as_view(), name="api-randomization-list-lock"),
    path("participants/<int:pk>/randomize/", api.ParticipantRandomize.as_view(), name="api-participant-randomize"),
    path("participants/<int:pk>/unblind/", api.ParticipantUnblind.as_view(), name="api-participant-unblind"),
]
