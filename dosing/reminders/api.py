from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from dosing.reminders import selectors, services
from dosing.reminders.models import Reminder
from enrollment.models import Participant
from trialsite import access
from trialsite.access import Capability


class ReminderSerializer(serializers.ModelSerializer):
    participant = serializers.CharField(source="participant.label", read_only=True)
    visit = serializers.CharField(source="visit.code", read_only=True)

    class Meta:
        model = Reminder
        fields = [
            "id",
            "participant",
            "visit",
            "kind",
            "audience",
            "channel",
            "due_at",
            "status",
            "status_reason",
            "attempts",
            "sent_at",
        ]


@extend_schema(parameters=[OpenApiParameter("status", str, enum=Reminder.Status.values)])
class ReminderList(generics.ListAPIView):
    serializer_class = ReminderSerializer

    def get_queryset(self):
        access.require(self.request.user, Capability.VIEW_PARTICIPANTS)
        status = self.request.query_params.get("status")
        return selectors.reminders_for(self.request.user, status=status if status in Reminder.Status.values else None)


class OptOutSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500)


class ParticipantOptOut(APIView):
    @extend_schema(
        request=OptOutSerializer,
        responses=inline_serializer("OptOutResult", {"cancelled": serializers.IntegerField()}),
    )
    def post(self, request, pk: int):
        participant = access.get_for_user(Participant.objects.all(), request.user, Capability.SCREEN, pk=pk)
        payload = OptOutSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        cancelled = services.participant_contact_opt_out(
            participant=participant, changed_by=request.user, reason=payload.validated_data.get("reason", "")
        )
        return Response({"cancelled": cancelled})
