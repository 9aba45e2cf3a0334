from django.urls import path

from reports import views

urlpatterns = [
    path("reports/", views.reports_home, name="reports"),
    path("reports/codebook/", views.codebook, name="report-codebook"),
    path("reports/exports/", views.export_create, name="report-export-create"),
    path("reports/exports/<int:pk>/download/", views.export_download, name="report-export-download"),
]
