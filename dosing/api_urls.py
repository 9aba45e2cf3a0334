from django.urls import include, path

from dosing import api

urlpatterns = [
    path("visits/", api.VisitList.as_view(), name="api-visits"),
    path("visits/<int:pk>/", api.VisitDetail.as_view(), name="api-visit"),
    path("visits/<int:pk>/record/", api.VisitRecord.as_view(), name="api-visit-record"),
    path("visits/<int:pk>/repeat-labs/", api.VisitRepeatLabs.as_view(), name="api-visit-repeat-labs"),
    path("visits/<int:pk>/assign-kits/", api.VisitAssignKits.as_view(), name="api-visit-assign-kits"),
    path("pharmacy/queue/", api.PharmacyQueueView.as_view(), name="api-pharmacy-queue"),
    path("kits/", api.KitList.as_view(), name="api-kits"),
    path("kits/<int:pk>/dispense/", api.KitDispense.as_view(), name="api-kit-dispense"),
    path("kits/<int:pk>/return/", api.KitReturn.as_view(), name="api-kit-return"),
    path("kits/<int:pk>/excursion/", api.KitExcursion.as_view(), name="api-kit-excursion"),
    path("shipments/<int:pk>/receive/", api.ShipmentReceive.as_view(), name="api-shipment-receive"),
    path("accountability/kits/", api.KitAccountabilityList.as_view(), name="api-accountability-kits"),
    path(
        "accountability/participants/",
        api.ParticipantAccountabilityList.as_view(),
        name="api-accountability-participants",
    ),
    path("supply/kits/", api.SupplyKitList.as_view(), name="api-supply-kits"),
    path("supply/kits/import/", api.KitImport.as_view(), name="api-supply-kit-import"),
    path("supply/kit-lists/", api.KitListGenerate.as_view(), name="api-supply-kit-list-generate"),
    path("supply/kits/<int:pk>/release/", api.KitRelease.as_view(), name="api-supply-kit-release"),
    path("supply/kits/<int:pk>/destroy/", api.KitDestroy.as_view(), name="api-supply-kit-destroy"),
    path("supply/stock/", api.SupplyStock.as_view(), name="api-supply-stock"),
    path("supply/shipments/", api.ShipmentCreate.as_view(), name="api-supply-shipments"),
    path("", include("dosing.reminders.api_urls")),
    path("", include("schedules.api_urls")),
]
