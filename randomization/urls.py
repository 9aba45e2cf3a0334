from django.urls import path

from randomization import views

urlpatterns = [
    path("participants/<int:pk>/randomize/", views.participant_randomize, name="participant-randomize"),
    path("participants/<int:pk>/unblind/", views.participant_unblind, name="participant-unblind"),
    path("participants/<int:pk>/sealed-sheet/", views.sealed_sheet_opened, name="participant-sealed-sheet"),
    path("randomization/lists/", views.list_index, name="randomization-lists"),
    path("randomization/code-break-sheets/", views.code_break_sheets, name="code-break-sheets"),
    path("randomization/lists/<int:pk>/", views.list_detail, name="randomization-list-detail"),
]
