from django.urls import path

from reports import api

urlpatterns = [
    path("reports/enrollment/", api.EnrollmentReportView.as_view(), name="api-report-enrollment"),
    path("reports/consort/", api.ConsortView.as_view(), name="api-report-consort"),
    path("exports/", api.ExportList.as_view(), name="api-exports"),
    path("exports/<int:pk>/", api.ExportDetail.as_view(), name="api-export"),
]
