from django.urls import include, path

from dosing import views

urlpatterns = [
    path("visits/<int:pk>/", views.visit_detail, name="visit-detail"),
    path("visits/<int:pk>/record/", views.visit_record, name="visit-record"),
    path("visits/<int:pk>/repeat-labs/", views.visit_repeat_labs, name="visit-repeat-labs"),
    path("visits/<int:pk>/assign-kits/", views.visit_assign_kits, name="visit-assign-kits"),
    path("pharmacy/", views.pharmacy, name="pharmacy"),
    path("pharmacy/kits/<int:pk>/dispense/", views.kit_dispense, name="kit-dispense"),
    path("pharmacy/kits/<int:pk>/return/", views.kit_return, name="kit-return"),
    path("pharmacy/kits/<int:pk>/excursion/", views.kit_excursion, name="kit-excursion"),
    path("pharmacy/shipments/<int:pk>/receive/", views.shipment_receive, name="shipment-receive"),
    path("pharmacy/accountability/", views.accountability, name="accountability"),
    path("supply/", views.supply, name="supply"),
    path(
        "supply/kits/<int:pk>/release/",
        views.kit_quarantine_decision,
        {"decision": "release"},
        name="kit-release",
    ),
    path(
        "supply/kits/<int:pk>/destroy/",
        views.kit_quarantine_decision,
        {"decision": "destroy"},
        name="kit-destroy",
    ),
    path("", include("dosing.reminders.urls")),
    # The schedule's pages sit beside the visits' (the site URLconf lists apps, not routes).
    path("", include("schedules.urls")),
]
