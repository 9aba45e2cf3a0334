from django.urls import path

from crf import views

urlpatterns = [
    path("participants/<int:pk>/forms/", views.form_list, name="crf-forms"),
    path("participants/<int:pk>/forms/<str:form_code>/<str:visit_code>/", views.visit_form, name="crf-visit-form"),
    path("participants/<int:pk>/logs/<str:form_code>/new/", views.log_entry_new, name="crf-log-new"),
    path("participants/<int:pk>/logs/<str:form_code>/<int:sequence>/", views.log_entry, name="crf-log-entry"),
]
