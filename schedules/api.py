"""The visit schedule over the API, through the same service as the page."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from enrollment.models import Participant
from schedules import services
from schedules.models import Visit
from trialsite import access
from trialsite.access import Capability


class UnscheduledVisitSerializer(serializers.Serializer):
    visit_date = serializers.DateField()
    reason = serializers.CharField(max_length=2000, help_text="Why the visit is needed; kept in the audit trail")


class PlannedVisitSerializer(serializers.ModelSerializer):
    participant = serializers.IntegerField(source="participant_id", read_only=True)

    class Meta:
        model = Visit
        fields = [
            "id",
            "participant",
            "sequence",
            "code",
            "kind",
            "target_date",
            "window_start",
            "window_end",
            "status",
        ]


class UnscheduledVisitAdd(APIView):
    @extend_schema(request=UnscheduledVisitSerializer, responses={201: PlannedVisitSerializer})
    def post(self, request, pk):
        participant = access.get_for_user(
            Participant.objects.select_related("site__trial"), request.user, Capability.RECORD_VISITS, pk=pk
        )
        data = UnscheduledVisitSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        visit = services.unscheduled_visit_add(participant=participant, added_by=request.user, **data.validated_data)
        return Response(PlannedVisitSerializer(visit).data, status=status.HTTP_201_CREATED)
