"""Visits, pharmacy and supply over the API: the same selectors and services as the pages.
Kit content appears only in the supply endpoints, which need MANAGE_SUPPLY and VIEW_ALLOCATION;
every other kit serializer has no content field at all."""

from __future__ import annotations

from django.db.models import Prefetch, Q
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from dosing import selectors, services
from dosing.exceptions import KitListInvalid, NoKitAvailable
from dosing.labs import CountUnit, count_per_mm3
from dosing.models import DoseRecord, Kit, KitContent, RepeatLabs, Shipment
from dosing.views import MAX_KIT_LIST_BYTES
from enrollment.models import Participant
from schedules.models import Visit
from trialsite import access, tenancy
from trialsite.access import Capability
from trialsite.exceptions import TrialRuleError

# --- serializers -------------------------------------------------------------------------------


class BlindedKitSerializer(serializers.ModelSerializer):
    """A kit as a blinded user sees it: number, type, status. There is no content field."""

    class Meta:
        model = Kit
        fields = ["id", "kit_number", "kit_type", "status", "packaging_lot", "label_expiry"]


class SupplyKitSerializer(serializers.ModelSerializer):
    """A kit as the unblinded supply manager sees it, content included."""

    site = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)

    class Meta:
        model = Kit
        fields = [
            "id",
            "kit_number",
            "kit_type",
            "content",
            "lot",
            "expiry",
            "packaging_lot",
            "label_expiry",
            "status",
            "site",
            "shipment",
            "status_note",
            "supply_note",
        ]


class DoseSerializer(serializers.ModelSerializer):
    reasons = serializers.ListField(child=serializers.CharField())
    vial_plan = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField(), min_length=2, max_length=2),
        help_text="[[vial size mg, count], ...], the same for every arm",
    )

    class Meta:
        model = DoseRecord
        fields = [
            "first_dose",
            "neutrophils",
            "platelets",
            "alt_uln",
            "ast_uln",
            "decision",
            "reasons",
            "weight_kg",
            "baseline_weight_kg",
            "weight_change_flagged",
            "dose_mg",
            "concentrate_ml",
            "diluted_volume_ml",
            "vial_plan",
        ]


class RepeatLabsOutSerializer(serializers.ModelSerializer):
    reasons = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = RepeatLabs
        fields = ["measured_on", "neutrophils", "platelets", "alt_uln", "ast_uln", "decision", "reasons"]


class VisitSerializer(serializers.ModelSerializer):
    participant = serializers.IntegerField(source="participant_id", read_only=True)
    dose = serializers.SerializerMethodField()
    repeat_labs = RepeatLabsOutSerializer(many=True, read_only=True, help_text="Labs repeated after a held infusion")
    kits = BlindedKitSerializer(many=True, read_only=True)

    class Meta:
        model = Visit
        fields = [
            "id",
            "participant",
            "code",
            "kind",
            "cycle",
            "target_date",
            "window_start",
            "window_end",
            "status",
            "actual_date",
            "is_deviation",
            "out_of_window_reason",
            "weight_kg",
            "dose",
            "repeat_labs",
            "kits",
        ]

    @extend_schema_field(DoseSerializer(allow_null=True))
    def get_dose(self, visit):
        # A visit without a dose record raises on access (reverse one-to-one): hasattr is False.
        return DoseSerializer(visit.dose).data if hasattr(visit, "dose") else None


class RecordedVisitSerializer(VisitSerializer):
    """A visit as `visit_record` leaves it, answered without two more reads: its kits are those
    the recording assigned (context "kits"), and it has no repeated labs, which only follow a
    dose held at a visit already recorded."""

    repeat_labs = serializers.SerializerMethodField()
    kits = serializers.SerializerMethodField()

    def get_repeat_labs(self, visit) -> list:
        return []

    def get_kits(self, visit) -> list:
        return BlindedKitSerializer(self.context["kits"], many=True).data


def _count_field(**kwargs):
    return serializers.DecimalField(
        max_digits=12,
        decimal_places=3,
        min_value=0,
        help_text="In the unit given by the matching _unit field (/mm3 when absent); stored as whole cells per mm3",
        **kwargs,
    )


def _unit_field():
    return serializers.ChoiceField(
        choices=CountUnit.choices, required=False, help_text="per_mm3 (default) or 1e9_per_l (x10^9/L = 1,000 /mm3)"
    )


class LabCountsSerializer(serializers.Serializer):
    """Counts in the lab report's unit, validated into whole cells per mm3 by the function the
    web form uses (`labs.count_per_mm3`); the unit fields leave the validated data."""

    def validate(self, attrs):
        for name in ("neutrophils", "platelets"):
            unit = attrs.pop(f"{name}_unit", None)
            if attrs.get(name) is None:
                continue
            try:
                attrs[name] = count_per_mm3(attrs[name], unit, field=name)
            except TrialRuleError as error:
                raise serializers.ValidationError(error.as_dict()) from None
        return attrs


class VisitRecordSerializer(LabCountsSerializer):
    actual_date = serializers.DateField()
    weight_kg = serializers.DecimalField(max_digits=5, decimal_places=1, required=False, allow_null=True)
    neutrophils = _count_field(required=False, allow_null=True)
    neutrophils_unit = _unit_field()
    platelets = _count_field(required=False, allow_null=True)
    platelets_unit = _unit_field()
    alt_uln = serializers.DecimalField(max_digits=5, decimal_places=2, min_value=0, required=False, allow_null=True)
    ast_uln = serializers.DecimalField(max_digits=5, decimal_places=2, min_value=0, required=False, allow_null=True)
    out_of_window_reason = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    confirm_open_adverse_events = serializers.BooleanField(
        required=False,
        default=False,
        help_text="The open grade 3+ adverse event(s) of special interest were reviewed with the investigator and "
        "dosing goes ahead; needed when such an event is ongoing and the dose would be given.",
    )


class RepeatLabsSerializer(LabCountsSerializer):
    measured_on = serializers.DateField()
    neutrophils = _count_field()
    neutrophils_unit = _unit_field()
    platelets = _count_field()
    platelets_unit = _unit_field()
    alt_uln = serializers.DecimalField(max_digits=5, decimal_places=2, min_value=0)
    ast_uln = serializers.DecimalField(max_digits=5, decimal_places=2, min_value=0)
    confirm_open_adverse_events = serializers.BooleanField(
        required=False,
        default=False,
        help_text="As at the visit: needed when these labs turn the hold into a dose while a grade 3+ adverse event "
        "of special interest is ongoing.",
    )


class VisitRecordResultSerializer(serializers.Serializer):
    visit = VisitSerializer()
    no_kit = serializers.BooleanField(help_text="A needed kit could not be assigned; the supply manager was notified.")
    message = serializers.CharField(allow_blank=True)


class PreparationSerializer(serializers.Serializer):
    dose_mg = serializers.DecimalField(max_digits=6, decimal_places=1)
    concentrate_ml = serializers.DecimalField(max_digits=5, decimal_places=1)
    diluted_volume_ml = serializers.DecimalField(max_digits=5, decimal_places=1)
    vial_plan = serializers.ListField(child=serializers.ListField(child=serializers.IntegerField()))


class PharmacyKitSerializer(serializers.ModelSerializer):
    participant = serializers.CharField(source="participant.label")
    visit = serializers.CharField(source="visit.code")
    visit_date = serializers.DateField(source="visit.actual_date", allow_null=True)
    preparation = serializers.SerializerMethodField()

    class Meta:
        model = Kit
        fields = [
            "id",
            "kit_number",
            "kit_type",
            "status",
            "participant",
            "visit",
            "visit_date",
            "dispensed_at",
            "preparation",
        ]

    @extend_schema_field(PreparationSerializer(allow_null=True))
    def get_preparation(self, kit):
        if not kit.is_infusion or kit.visit_id is None or not hasattr(kit.visit, "dose"):
            return None
        return _PREPARATION.to_representation(kit.visit.dose)


# One instance for every row of the queue: a serializer built per row copies its fields each time.
_PREPARATION = PreparationSerializer()


class AwaitingKitSerializer(serializers.ModelSerializer):
    participant = serializers.CharField(source="participant.label")

    class Meta:
        model = Visit
        fields = ["id", "participant", "code", "actual_date"]


class ShipmentSerializer(serializers.ModelSerializer):
    site = serializers.SlugRelatedField(slug_field="code", read_only=True)
    kit_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Shipment
        fields = ["id", "site", "shipped_at", "received_at", "kit_count"]


class PharmacyQueueSerializer(serializers.Serializer):
    to_dispense = PharmacyKitSerializer(many=True)
    to_dispense_total = serializers.IntegerField(source="to_dispense.paginator.count")
    awaiting_return = PharmacyKitSerializer(many=True)
    awaiting_return_total = serializers.IntegerField(source="awaiting_return.paginator.count")
    awaiting_kits = AwaitingKitSerializer(many=True)
    shipments = ShipmentSerializer(many=True)
    quarantined = BlindedKitSerializer(many=True)


class DispenseSerializer(serializers.Serializer):
    label_number = serializers.CharField(max_length=40)


class ReturnSerializer(serializers.Serializer):
    returned_on = serializers.DateField()
    tablets_returned = serializers.IntegerField(min_value=0, max_value=1000, required=False, allow_null=True)


class ExcursionSerializer(serializers.Serializer):
    description = serializers.CharField(max_length=500)


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500)


class KitImportSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="CSV, UTF-8: kit_number,kit_type,content,lot,expiry")


class KitImportResultSerializer(serializers.Serializer):
    imported = serializers.IntegerField()


class ShipmentCreateSerializer(serializers.Serializer):
    site = serializers.CharField(help_text="Site code", max_length=20)
    per_content = serializers.DictField(
        child=serializers.IntegerField(min_value=0, max_value=250),
        help_text='Kits of EACH content per kit type of the protocol\'s [kits] types, e.g. {"<type>": 4}: '
        "every shipment is mixed alike.",
    )


class KitLotSerializer(serializers.Serializer):
    kit_type = serializers.CharField(max_length=20)
    content = serializers.ChoiceField(choices=KitContent.choices)
    lot = serializers.CharField(max_length=40)
    expiry = serializers.DateField()


class KitListGenerateSerializer(serializers.Serializer):
    packaging_lot = serializers.CharField(max_length=40)
    kits_per_type = serializers.IntegerField(min_value=1, max_value=5000)
    seed = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    lots = KitLotSerializer(many=True, help_text="One manufacturing lot and true expiry per kit type and content")


class KitListSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kit_count = serializers.IntegerField()
    sha256 = serializers.CharField()
    source = serializers.CharField()


class StockLineSerializer(serializers.Serializer):
    site = serializers.CharField(source="site.code")
    kit_type = serializers.CharField()
    content = serializers.CharField()
    available = serializers.IntegerField()
    assigned = serializers.IntegerField()
    quarantined = serializers.IntegerField()
    expiring_soon = serializers.IntegerField()
    low = serializers.BooleanField()
    in_transit = serializers.IntegerField()


class KitAccountabilitySerializer(serializers.ModelSerializer):
    participant = serializers.CharField(source="participant.label")
    visit = serializers.CharField(source="visit.code")
    adherence = serializers.SerializerMethodField()

    class Meta:
        model = Kit
        fields = [
            "kit_number",
            "kit_type",
            "status",
            "participant",
            "visit",
            "dispensed_at",
            "returned_on",
            "tablets_returned",
            "adherence",
        ]

    @extend_schema_field(OpenApiTypes.DECIMAL)
    def get_adherence(self, kit):
        value = selectors.kit_adherence(kit)
        return None if value is None else str(value)


class ParticipantAccountabilitySerializer(serializers.Serializer):
    participant = serializers.CharField(source="participant.label")
    dispensed = serializers.IntegerField()
    returned = serializers.IntegerField()
    tablets_dispensed = serializers.IntegerField(help_text="Every dispensed tablet kit, returned or not.")
    tablets_returned = serializers.IntegerField(help_text="Returned tablet kits only.")
    tablets_taken = serializers.IntegerField(help_text="Returned tablet kits only.")
    days_elapsed = serializers.IntegerField(help_text="Returned tablet kits only.")
    adherence = serializers.DecimalField(
        max_digits=6, decimal_places=2, allow_null=True, help_text="Over returned tablet kits only."
    )


# --- visits ------------------------------------------------------------------------------------


def _blinded_kits() -> Prefetch:
    return Prefetch("kits", queryset=selectors.kits_blinded(Kit.objects.all()).order_by("kit_type"))


class VisitList(generics.ListAPIView):
    serializer_class = VisitSerializer

    @extend_schema(
        parameters=[OpenApiParameter("participant", OpenApiTypes.INT, description="Only this participant's visits")]
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        user = self.request.user
        access.require(user, Capability.VIEW_PARTICIPANTS)
        visits = access.scope(Visit.objects.all(), user, Capability.VIEW_PARTICIPANTS)
        participant = self.request.query_params.get("participant")
        if participant is not None:
            participant = access.get_for_user(
                Participant.objects.all(), user, Capability.VIEW_PARTICIPANTS, pk=participant
            )
            visits = visits.filter(participant=participant)
        return (
            visits.select_related("dose")
            .prefetch_related(_blinded_kits(), "repeat_labs")
            .order_by("participant_id", "sequence")
        )


class VisitDetail(generics.RetrieveAPIView):
    serializer_class = VisitSerializer

    def get_object(self):
        visits = Visit.objects.select_related("dose").prefetch_related(_blinded_kits(), "repeat_labs")
        return access.get_for_user(visits, self.request.user, Capability.VIEW_PARTICIPANTS, pk=self.kwargs["pk"])


class VisitRecord(APIView):
    @extend_schema(request=VisitRecordSerializer, responses={200: VisitRecordResultSerializer})
    def post(self, request, pk):
        data = VisitRecordSerializer(data=request.data)
        if not data.is_valid():
            # A visit the user cannot reach is not found, whatever was sent.
            selectors.visit_for(request.user, pk, Capability.RECORD_VISITS)
            raise serializers.ValidationError(data.errors)
        outcome = services.visit_record_reachable(pk=pk, recorded_by=request.user, **data.validated_data)
        # Read back for the values as stored (rounded to their columns), with the dose; the kits
        # are those the claiming statement returned.
        recorded = Visit.objects.select_related("dose").get(pk=pk)
        return Response(
            {
                "visit": RecordedVisitSerializer(recorded, context={"kits": outcome.kits}).data,
                "no_kit": outcome.no_kit,
                "message": str(NoKitAvailable().message) if outcome.no_kit else "",
            }
        )


class VisitRepeatLabs(APIView):
    @extend_schema(request=RepeatLabsSerializer, responses={200: VisitRecordResultSerializer})
    def post(self, request, pk):
        visit = selectors.visit_for(request.user, pk, Capability.RECORD_VISITS)
        data = RepeatLabsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        outcome = services.visit_repeat_labs(visit=visit, recorded_by=request.user, **data.validated_data)
        fresh = Visit.objects.select_related("dose").prefetch_related(_blinded_kits(), "repeat_labs").get(pk=visit.pk)
        payload = {
            "visit": fresh,
            "no_kit": outcome.no_kit,
            "message": str(NoKitAvailable().message) if outcome.no_kit else "",
        }
        return Response(VisitRecordResultSerializer(payload).data)


class VisitAssignKits(APIView):
    @extend_schema(request=None, responses={200: BlindedKitSerializer(many=True)})
    def post(self, request, pk):
        visit = selectors.visit_for(request.user, pk, Capability.DISPENSE)
        kits = services.kits_assign(visit=visit, assigned_by=request.user)
        return Response(
            BlindedKitSerializer(
                selectors.kits_blinded(Kit.objects.filter(pk__in=[k.pk for k in kits])), many=True
            ).data
        )


# --- pharmacy ----------------------------------------------------------------------------------


class PharmacyQueueView(APIView):
    @extend_schema(
        responses=PharmacyQueueSerializer,
        parameters=[
            OpenApiParameter(
                name, int, description=f"Page of {selectors.PHARMACY_PAGE_SIZE} kits, oldest first (default 1)"
            )
            for name in ("dispense_page", "return_page")
        ],
    )
    def get(self, request):
        access.require(request.user, Capability.DISPENSE)
        queue = selectors.pharmacy_queue(
            request.user,
            dispense_page=request.query_params.get("dispense_page"),
            return_page=request.query_params.get("return_page"),
        )
        return Response(PharmacyQueueSerializer(queue).data)


def _pharmacy_kit(request, pk) -> Kit:
    return access.get_for_user(
        selectors.kits_blinded(Kit.objects.select_related("site")), request.user, Capability.DISPENSE, pk=pk
    )


def _blinded(kit: Kit) -> dict:
    return BlindedKitSerializer(selectors.kits_blinded(Kit.objects.all()).get(pk=kit.pk)).data


class KitDispense(APIView):
    @extend_schema(request=DispenseSerializer, responses={200: BlindedKitSerializer})
    def post(self, request, pk):
        kit = _pharmacy_kit(request, pk)
        data = DispenseSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.kit_dispense(kit=kit, label_number=data.validated_data["label_number"], dispensed_by=request.user)
        return Response(_blinded(kit))


class KitReturn(APIView):
    @extend_schema(request=ReturnSerializer, responses={200: BlindedKitSerializer})
    def post(self, request, pk):
        kit = _pharmacy_kit(request, pk)
        data = ReturnSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.kit_return(kit=kit, returned_by=request.user, **data.validated_data)
        return Response(_blinded(kit))


class KitExcursion(APIView):
    @extend_schema(request=ExcursionSerializer, responses={200: BlindedKitSerializer})
    def post(self, request, pk):
        kit = _pharmacy_kit(request, pk)
        data = ExcursionSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.kit_report_excursion(kit=kit, reported_by=request.user, description=data.validated_data["description"])
        return Response(_blinded(kit))


class ShipmentReceive(APIView):
    @extend_schema(request=None, responses={200: ShipmentSerializer})
    def post(self, request, pk):
        shipment = access.get_for_user(Shipment.objects.all(), request.user, Capability.DISPENSE, pk=pk)
        services.shipment_receive(shipment=shipment, received_by=request.user)
        shipment = Shipment.objects.select_related("site").get(pk=shipment.pk)
        shipment.kit_count = shipment.kits.count()
        return Response(ShipmentSerializer(shipment).data)


class KitList(generics.ListAPIView):
    """Kits at the user's sites, blinded: for pharmacists and supply managers alike."""

    serializer_class = BlindedKitSerializer

    def get_queryset(self):
        user = self.request.user
        sites = access.site_ids_with(user, Capability.DISPENSE) | access.site_ids_with(user, Capability.MANAGE_SUPPLY)
        if not sites:
            raise Http404("Not found")
        return selectors.kits_blinded(Kit.objects.filter(site_id__in=sites)).order_by("kit_number")


class KitAccountabilityList(generics.ListAPIView):
    serializer_class = KitAccountabilitySerializer

    def get_queryset(self):
        user = self.request.user
        if not (access.can(user, Capability.DISPENSE) or access.can(user, Capability.MANAGE_SUPPLY)):
            raise Http404("Not found")
        return selectors.kit_accountability(user)


class ParticipantAccountabilityList(APIView):
    @extend_schema(responses=ParticipantAccountabilitySerializer(many=True))
    def get(self, request):
        user = request.user
        if not (access.can(user, Capability.DISPENSE) or access.can(user, Capability.MANAGE_SUPPLY)):
            raise Http404("Not found")
        return Response(ParticipantAccountabilitySerializer(selectors.participant_accountability(user), many=True).data)


# --- supply (unblinded) ------------------------------------------------------------------------


class SupplyKitList(generics.ListAPIView):
    """Every kit in the depot and at the user's supply sites, with content."""

    serializer_class = SupplyKitSerializer

    def get_queryset(self):
        selectors.require_supply(self.request.user)
        sites = selectors.supply_sites(self.request.user).values_list("pk", flat=True)
        # Depot kits have no site: without the trial, every trial's depot would be listed.
        return (
            Kit.objects.filter(trial=tenancy.trial_for(self.request.user))
            .filter(Q(site__isnull=True) | Q(site_id__in=list(sites)))
            .select_related("site")
            .order_by("kit_number")
        )


class SupplyStock(APIView):
    @extend_schema(responses=StockLineSerializer(many=True))
    def get(self, request):
        selectors.require_supply(request.user)
        return Response(StockLineSerializer(selectors.stock_by_site(request.user), many=True).data)


class KitImport(APIView):
    parser_classes = [MultiPartParser]

    @extend_schema(request={"multipart/form-data": KitImportSerializer}, responses={201: KitImportResultSerializer})
    def post(self, request):
        selectors.require_supply(request.user)
        data = KitImportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        if upload.size > MAX_KIT_LIST_BYTES:
            raise KitListInvalid(["The file is larger than 2 MB."])
        try:
            text = upload.read().decode("utf-8")
        except UnicodeDecodeError:
            raise KitListInvalid(["The file is not UTF-8 text."]) from None
        trial = tenancy.trial_for(request.user)
        kits = services.kits_import(csv_text=text, imported_by=request.user, trial=trial)
        return Response({"imported": len(kits)}, status=status.HTTP_201_CREATED)


class ShipmentCreate(APIView):
    @extend_schema(request=ShipmentCreateSerializer, responses={201: ShipmentSerializer})
    def post(self, request):
        selectors.require_supply(request.user)
        data = ShipmentCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        site = access.get_object_or_404(selectors.supply_sites(request.user), code=data.validated_data["site"])
        shipment = services.shipment_create(
            site=site, per_content=data.validated_data["per_content"], shipped_by=request.user
        )
        shipment.kit_count = shipment.kits.count()
        return Response(ShipmentSerializer(shipment).data, status=status.HTTP_201_CREATED)


class KitListGenerate(APIView):
    @extend_schema(request=KitListGenerateSerializer, responses={201: KitListSerializer})
    def post(self, request):
        selectors.require_supply(request.user)
        data = KitListGenerateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        trial = tenancy.trial_for(request.user)
        lots = {(lot["kit_type"], lot["content"]): (lot["lot"], lot["expiry"]) for lot in data.validated_data["lots"]}
        missing = [
            f"{kit_type} {content}"
            for kit_type, contents in sorted(services.kit_contents_by_type(trial).items())
            for content in sorted(contents)
            if (kit_type, content) not in lots
        ]
        if missing:
            raise serializers.ValidationError({"lots": [f"Missing: {', '.join(missing)}"]})
        kit_list = services.kit_list_generate(
            trial=trial,
            packaging_lot=data.validated_data["packaging_lot"],
            kits_per_type=data.validated_data["kits_per_type"],
            seed=data.validated_data["seed"],
            lots=lots,
            created_by=request.user,
        )
        return Response(KitListSerializer(kit_list).data, status=status.HTTP_201_CREATED)


class _QuarantineDecision(APIView):
    decision = ""

    @extend_schema(request=ReasonSerializer, responses={200: SupplyKitSerializer})
    def post(self, request, pk):
        selectors.require_supply(request.user)
        kit = access.get_for_user(Kit.objects.all(), request.user, Capability.MANAGE_SUPPLY, pk=pk)
        data = ReasonSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        reason = data.validated_data["reason"]
        if self.decision == "release":
            kit = services.kit_release(kit=kit, released_by=request.user, reason=reason)
        else:
            kit = services.kit_destroy(kit=kit, destroyed_by=request.user, reason=reason)
        return Response(SupplyKitSerializer(Kit.objects.select_related("site").get(pk=kit.pk)).data)


class KitRelease(_QuarantineDecision):
    decision = "release"


class KitDestroy(_QuarantineDecision):
    decision = "destroy"
