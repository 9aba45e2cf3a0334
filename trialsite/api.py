"""The common ground of the REST API: the error format, the current user, sites and the audit
trail. Every capability's endpoints use the same access functions as its web views."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import ValidationError as DRFValidationError
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from trialsite import access, selectors
from trialsite.access import Capability
from trialsite.exceptions import TrialRuleError
from trialsite.models import AuditEvent, Site, StaffRole


def exception_handler(exc, context):
    """Trial rule refusals and model validation errors become 4xx answers naming the field."""
    if isinstance(exc, TrialRuleError):
        return Response(exc.as_dict(), status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = DRFValidationError(detail)
    if isinstance(exc, Http404):
        return Response({"detail": "Not found."}, status=404)
    return drf_exception_handler(exc, context)


class StaffRoleSerializer(serializers.ModelSerializer):
    site = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = StaffRole
        fields = ["site", "role"]


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    full_name = serializers.CharField()
    roles = StaffRoleSerializer(many=True)
    capabilities = serializers.ListField(child=serializers.CharField())


class MeView(APIView):
    @extend_schema(responses=MeSerializer)
    def get(self, request):
        user = request.user
        roles = StaffRole.objects.filter(user=user).select_related("site").order_by("site__code", "role")
        payload = {
            "username": user.get_username(),
            "full_name": user.get_full_name(),
            "roles": roles,
            "capabilities": sorted(access.capabilities_anywhere(user)),
        }
        return Response(MeSerializer(payload).data)


class SiteSerializer(serializers.ModelSerializer):
    trial = serializers.SlugRelatedField(slug_field="nct_id", read_only=True)

    class Meta:
        model = Site
        fields = ["id", "code", "name", "time_zone", "trial"]


class SiteList(generics.ListAPIView):
    serializer_class = SiteSerializer

    def get_queryset(self):
        return Site.objects.filter(pk__in=access.site_ids(self.request.user)).select_related("trial")


class SiteDetail(generics.RetrieveAPIView):
    serializer_class = SiteSerializer

    def get_object(self):
        sites = Site.objects.filter(pk__in=access.site_ids(self.request.user)).select_related("trial")
        return access.get_object_or_404(sites, pk=self.kwargs["pk"])


class AuditEventSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(
        source="listed_id",
        read_only=True,
        help_text=(
            "The event's id in the trail, for a reader who sees allocation at every site they audit; "
            "for any other reader its position in this list (1 = the oldest event the filters give), "
            "because the gaps between the trail's ids would count changes hidden from them."
        ),
    )
    actor = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "occurred_at",
            "table_name",
            "record_pk",
            "action",
            "old_values",
            "new_values",
            "changed_fields",
            "actor",
            "reason",
            "site_id",
            "subject_id",
            "database_user",
        ]


class AuditEventList(generics.ListAPIView):
    serializer_class = AuditEventSerializer

    def get_queryset(self):
        access.require(self.request.user, Capability.READ_AUDIT)
        params = self.request.query_params
        subject = params.get("subject") or None
        # An id, or a randomization or screening number at the reader's sites, as on the page.
        subject_id = selectors.audit_subject_for(self.request.user, subject)
        if subject is not None and subject_id is None:
            raise DRFValidationError(
                {
                    "subject": [
                        _(
                            "No participant at your sites has this number. Give a randomization or screening "
                            "number, such as NT-0001, or an id, a whole number such as 12."
                        )
                    ]
                }
            )
        return selectors.audit_events_for(
            self.request.user,
            table_name=params.get("table") or None,
            record_pk=params.get("pk") or None,
            subject_id=subject_id,
        )

    def paginate_queryset(self, queryset):
        page = super().paginate_queryset(queryset)
        events = selectors.redact_for(self.request.user, page if page is not None else queryset)
        first = self.paginator.page.start_index() if page is not None else 1
        return selectors.number_for(self.request.user, events, first=first)
