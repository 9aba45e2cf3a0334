from django.urls import path

from enrollment import api

urlpatterns = [
    path("screenings/", api.ScreeningIndex.as_view(), name="api-screenings"),
    path("screenings/<int:pk>/", api.ScreeningDetail.as_view(), name="api-screening"),
    path("participants/", api.ParticipantIndex.as_view(), name="api-participants"),
    path("participants/<int:pk>/", api.ParticipantDetail.as_view(), name="api-participant"),
    path(
        "participants/<int:pk>/sign-eligibility/", api.ParticipantSignEligibility.as_view(), name="api-participant-sign"
    ),
    path("participants/<int:pk>/withdraw/", api.ParticipantWithdraw.as_view(), name="api-participant-withdraw"),
]
