"""SAE reports, the PI's signature and the sponsor's SUSAR assessment over the API: the same
services and the same refusals as the adverse event page."""

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from enrollment.models import Participant
from safety import services
from safety.models import AdverseEvent, SaeReport, SusarAssessment
from trialsite import access
from trialsite.access import Capability


class SaeReportSerializer(serializers.ModelSerializer):
    written_by = serializers.CharField(source="written_by.username", read_only=True)
    signed = serializers.SerializerMethodField()
    signed_by = serializers.SerializerMethodField()
    signed_at = serializers.DateTimeField(source="signature.signed_at", read_only=True, allow_null=True, default=None)

    class Meta:
        model = SaeReport
        fields = [
            "id",
            "version",
            "narrative",
            "complete",
            "written_by",
            "written_at",
            "signed",
            "signed_by",
            "signed_at",
        ]

    def get_signed(self, report) -> bool:
        return report.signature_id is not None

    def get_signed_by(self, report) -> str | None:
        return report.signature.signer.username if report.signature_id else None


class SaeReportInput(serializers.Serializer):
    narrative = serializers.CharField(allow_blank=True, max_length=20000, trim_whitespace=False)
    complete = serializers.BooleanField(default=False)


class SignInput(serializers.Serializer):
    password = serializers.CharField(max_length=200, trim_whitespace=False)


class SusarAssessmentSerializer(serializers.ModelSerializer):
    assessed_by = serializers.CharField(source="assessed_by.username", read_only=True)
    reported_by = serializers.CharField(source="reported_by.username", read_only=True, allow_null=True, default=None)
    is_susar = serializers.BooleanField(read_only=True)
    status = serializers.SerializerMethodField()

    class Meta:
        model = SusarAssessment
        fields = [
            "related",
            "expectedness",
            "reference",
            "assessed_by",
            "assessed_at",
            "is_susar",
            "deadline",
            "status",
            "reported_at",
            "report_reference",
            "reported_by",
        ]

    def get_status(self, assessment) -> str:
        return services.susar_status(assessment)


class SusarAssessInput(serializers.Serializer):
    related = serializers.BooleanField()
    expectedness = serializers.ChoiceField(choices=SusarAssessment.Expectedness.choices)
    reference = serializers.CharField(max_length=5000)


class SusarReportInput(serializers.Serializer):
    report_reference = serializers.CharField(max_length=200)


def _first(request, pk: int, sequence: int, capability: str = Capability.VIEW_PARTICIPANTS) -> AdverseEvent:
    participant = access.get_for_user(
        Participant.objects.select_related("site__trial"), request.user, capability, pk=pk
    )
    first = (
        AdverseEvent.objects.filter(participant=participant, sequence=sequence, follows__isnull=True)
        .select_related("participant", "site__trial")
        .first()
    )
    if first is None:
        raise Http404
    return first


def _reports(first: AdverseEvent):
    return SaeReport.objects.filter(adverse_event=first).select_related("written_by", "signature__signer")


class SaeReports(APIView):
    @extend_schema(responses=SaeReportSerializer(many=True))
    def get(self, request, pk: int, sequence: int):
        first = _first(request, pk, sequence)
        return Response(SaeReportSerializer(_reports(first).order_by("version"), many=True).data)

    @extend_schema(request=SaeReportInput, responses={201: SaeReportSerializer})
    def post(self, request, pk: int, sequence: int):
        first = _first(request, pk, sequence)
        services.require_record(request.user, first.site)
        payload = SaeReportInput(data=request.data)
        payload.is_valid(raise_exception=True)
        report = services.sae_report_write(event=first, written_by=request.user, **payload.validated_data)
        return Response(SaeReportSerializer(_reports(first).get(pk=report.pk)).data, status=status.HTTP_201_CREATED)


class SaeReportSign(APIView):
    @extend_schema(request=SignInput, responses=SaeReportSerializer)
    def post(self, request, pk: int, sequence: int, version: int):
        # Like the page: the signing capability at the participant's site; the service then
        # accepts the site's principal investigator only.
        first = _first(request, pk, sequence, Capability.SIGN_ELIGIBILITY)
        report = access.get_object_or_404(_reports(first), version=version)
        payload = SignInput(data=request.data)
        payload.is_valid(raise_exception=True)
        services.sae_report_sign(
            report=report, signer=request.user, password=payload.validated_data["password"], request=request
        )
        return Response(SaeReportSerializer(_reports(first).get(pk=report.pk)).data)


class SusarAssessmentDetail(APIView):
    """The sponsor's safety officer only: anyone else gets 404, as on the page."""

    @extend_schema(responses=SusarAssessmentSerializer)
    def get(self, request, pk: int, sequence: int):
        first = _first(request, pk, sequence, Capability.ASSESS_SAE)
        assessment = access.get_object_or_404(SusarAssessment.objects.all(), adverse_event=first)
        return Response(SusarAssessmentSerializer(assessment).data)

    @extend_schema(request=SusarAssessInput, responses=SusarAssessmentSerializer)
    def put(self, request, pk: int, sequence: int):
        first = _first(request, pk, sequence, Capability.ASSESS_SAE)
        payload = SusarAssessInput(data=request.data)
        payload.is_valid(raise_exception=True)
        assessment = services.sae_assess(event=first, assessed_by=request.user, **payload.validated_data)
        return Response(SusarAssessmentSerializer(assessment).data)


class SusarExpeditedReport(APIView):
    @extend_schema(request=SusarReportInput, responses=SusarAssessmentSerializer)
    def post(self, request, pk: int, sequence: int):
        first = _first(request, pk, sequence, Capability.ASSESS_SAE)
        assessment = access.get_object_or_404(SusarAssessment.objects.all(), adverse_event=first)
        payload = SusarReportInput(data=request.data)
        payload.is_valid(raise_exception=True)
        assessment = services.susar_report_done(
            assessment=assessment, reported_by=request.user, reference=payload.validated_data["report_reference"]
        )
        return Response(SusarAssessmentSerializer(assessment).data)
