from django.urls import path

from enrollment import views

urlpatterns = [
    path("screening/", views.screening_log, name="screening-log"),
    path("screening/new/", views.screening_new, name="screening-new"),
    path("screening/<int:pk>/", views.screening_detail, name="screening-detail"),
    path("participants/", views.participant_list, name="participant-list"),
    path("participants/awaiting-signature/", views.signature_queue, name="signature-queue"),
    path("participants/<int:pk>/", views.participant_detail, name="participant-detail"),
]
