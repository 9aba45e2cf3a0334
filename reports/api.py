"""Reports and exports over the API: the same selectors and services as the Reports page."""

from __future__ import annotations

from django.db.models import Q
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from reports import selectors, services
from reports.models import Export, ExportFormat, ExportKind
from reports.views import site_parameter
from trialsite import access, tenancy
from trialsite.access import Capability

SITE_PARAMETER = OpenApiParameter("site", OpenApiTypes.INT, description="One site's report (default: all my sites)")


class CountsSerializer(serializers.Serializer):
    screened = serializers.IntegerField()
    eligible = serializers.IntegerField()
    screen_failures = serializers.IntegerField()
    incomplete = serializers.IntegerField()
    consented = serializers.IntegerField()
    enrolled = serializers.IntegerField()
    randomized = serializers.IntegerField()
    on_treatment = serializers.IntegerField()
    completed = serializers.IntegerField()
    withdrawn = serializers.IntegerField()
    died = serializers.IntegerField()


class ArmCountsSerializer(CountsSerializer):
    arm = serializers.CharField()


class SiteCountsSerializer(serializers.Serializer):
    site = serializers.CharField()
    counts = CountsSerializer()
    by_arm = ArmCountsSerializer(many=True, required=False)


class FailureReasonSerializer(serializers.Serializer):
    code = serializers.CharField()
    text = serializers.CharField()
    by_site = serializers.DictField(child=serializers.IntegerField())
    total = serializers.IntegerField()


class MonthSerializer(serializers.Serializer):
    month = serializers.CharField()
    randomized = serializers.IntegerField()
    cumulative = serializers.IntegerField()


class EnrollmentReportSerializer(serializers.Serializer):
    blinded = serializers.BooleanField()
    target = serializers.IntegerField()
    data_version = serializers.IntegerField()
    sites = SiteCountsSerializer(many=True)
    total = CountsSerializer()
    total_by_arm = ArmCountsSerializer(many=True, required=False)
    failure_reasons = FailureReasonSerializer(many=True)
    by_month = MonthSerializer(many=True)


def _counts(counts: dict) -> dict:
    return {key: counts.get(key, 0) for key in selectors.COUNT_KEYS}


class EnrollmentReportView(APIView):
    @extend_schema(parameters=[SITE_PARAMETER], responses=EnrollmentReportSerializer)
    def get(self, request):
        access.require(request.user, Capability.EXPORT_REPORTS)
        scope = selectors.report_scope(request.user, site_id=site_parameter(request.query_params.get("site")))
        report = selectors.enrollment_report(scope)
        payload = {
            "blinded": not scope.unblinded,
            "target": scope.trial.target_enrollment,
            "data_version": selectors.data_version(scope),
            "sites": [],
            "total": _counts(report.total),
            "failure_reasons": [
                {
                    "code": reason["code"],
                    "text": reason["text"],
                    "by_site": {site.code: reason["by_site"][site.pk] for site in scope.sites},
                    "total": reason["total"],
                }
                for reason in report.failure_reasons
            ],
            "by_month": [
                {
                    "month": month["month"].strftime("%Y-%m"),
                    "randomized": month["randomized"],
                    "cumulative": month["cumulative"],
                }
                for month in selectors.enrollment_by_month(scope)
            ],
        }
        for entry in report.sites:
            site_payload = {"site": entry["site"].code, "counts": _counts(entry["counts"])}
            if scope.unblinded:
                site_payload["by_arm"] = [
                    {"arm": arm.code, **_counts(entry["by_arm"].get(arm.code, {}))} for arm in report.arms
                ]
            payload["sites"].append(site_payload)
        if scope.unblinded:
            payload["total_by_arm"] = [
                {"arm": arm.code, **_counts(report.total_by_arm[arm.code])} for arm in report.arms
            ]
        return Response(EnrollmentReportSerializer(payload).data)


class ConsortCountSerializer(serializers.Serializer):
    key = serializers.CharField()
    label = serializers.CharField()
    n = serializers.IntegerField()


class ConsortGroupSerializer(serializers.Serializer):
    label = serializers.CharField()
    arm = serializers.CharField(required=False)
    allocated = serializers.IntegerField()
    received = serializers.IntegerField(help_text="Received the allocated intervention: at least one dose given.")
    not_received = serializers.IntegerField()
    not_received_reasons = ConsortCountSerializer(many=True)
    lost_to_follow_up = serializers.IntegerField()
    lost_reasons = ConsortCountSerializer(many=True)
    discontinued = serializers.IntegerField()
    discontinued_reasons = ConsortCountSerializer(many=True)
    on_treatment = serializers.IntegerField()
    completed = serializers.IntegerField()
    analysed = serializers.IntegerField()
    excluded_from_analysis = serializers.IntegerField()


class ConsortReasonSerializer(serializers.Serializer):
    code = serializers.CharField()
    text = serializers.CharField()
    total = serializers.IntegerField()


class ConsortSerializer(serializers.Serializer):
    blinded = serializers.BooleanField()
    assessed = serializers.IntegerField()
    excluded = serializers.IntegerField()
    excluded_not_eligible = serializers.IntegerField()
    excluded_incomplete = serializers.IntegerField()
    excluded_eligible_not_randomized = serializers.IntegerField()
    failure_reasons = ConsortReasonSerializer(many=True)
    randomized = serializers.IntegerField()
    groups = ConsortGroupSerializer(many=True)
    analysis_note = serializers.CharField()


class ConsortView(APIView):
    @extend_schema(parameters=[SITE_PARAMETER], responses=ConsortSerializer)
    def get(self, request):
        access.require(request.user, Capability.EXPORT_REPORTS)
        scope = selectors.report_scope(request.user, site_id=site_parameter(request.query_params.get("site")))
        flow = selectors.consort_flow(scope)
        groups = []

        def counts(reasons):
            return [{"key": key, "label": label, "n": n} for key, label, n in reasons]

        for group in flow.groups:
            entry = {
                "label": group.label,
                "allocated": group.allocated,
                "received": group.received,
                "not_received": group.not_received,
                "not_received_reasons": counts(group.not_received_reasons),
                "lost_to_follow_up": group.lost_to_follow_up,
                "lost_reasons": counts(group.lost_reasons),
                "discontinued": group.discontinued,
                "discontinued_reasons": counts(group.discontinued_reasons),
                "on_treatment": group.on_treatment,
                "completed": group.completed,
                "analysed": group.analysed,
                "excluded_from_analysis": group.excluded_from_analysis,
            }
            if group.code:
                entry["arm"] = group.code
            groups.append(entry)
        payload = {
            "blinded": flow.blinded,
            "assessed": flow.assessed,
            "excluded": flow.excluded,
            "excluded_not_eligible": flow.excluded_not_eligible,
            "excluded_incomplete": flow.excluded_incomplete,
            "excluded_eligible_not_randomized": flow.excluded_eligible_not_randomized,
            "failure_reasons": flow.failure_reasons,
            "randomized": flow.randomized,
            "groups": groups,
            "analysis_note": flow.analysis_note,
        }
        return Response(ConsortSerializer(payload).data)


class ExportSerializer(serializers.ModelSerializer):
    kind = serializers.ChoiceField(choices=ExportKind.choices)
    format = serializers.ChoiceField(choices=ExportFormat.choices)
    site = serializers.IntegerField(source="site_id", required=False, allow_null=True, min_value=1)
    status_display = serializers.CharField(source="get_status_display", read_only=True)
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Export
        fields = [
            "id",
            "kind",
            "format",
            "site",
            "status",
            "status_display",
            "progress",
            "blinded",
            "row_count",
            "data_version",
            "created_at",
            "started_at",
            "finished_at",
            "download_url",
        ]
        read_only_fields = [
            "status",
            "progress",
            "blinded",
            "row_count",
            "data_version",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def get_download_url(self, export: Export) -> str | None:
        if export.status != "done":
            return None
        return reverse("report-export-download", args=[export.pk])


@extend_schema_view(post=extend_schema(responses={202: ExportSerializer}))
class ExportList(generics.ListCreateAPIView):
    """My exports; POST queues one (always in the background) and answers 202."""

    serializer_class = ExportSerializer

    def get_queryset(self):
        access.require(self.request.user, Capability.EXPORT_REPORTS)
        trial = tenancy.trial_for(self.request.user)
        return Export.objects.filter(Q(trial=trial) | Q(trial__isnull=True), requested_by=self.request.user).order_by(
            "-created_at", "-id"
        )

    def create(self, request, *args, **kwargs):
        access.require(request.user, Capability.EXPORT_REPORTS)
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        export = services.export_request(
            user=request.user,
            kind=serializer.validated_data["kind"],
            format=serializer.validated_data["format"],
            site_id=serializer.validated_data.get("site_id"),
            background=True,
        )
        return Response(ExportSerializer(export).data, status=status.HTTP_202_ACCEPTED)


class ExportDetail(generics.RetrieveAPIView):
    serializer_class = ExportSerializer

    def get_object(self):
        return access.get_object_or_404(Export.objects.filter(requested_by=self.request.user), pk=self.kwargs["pk"])
