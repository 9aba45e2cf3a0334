"""The adverse event log over the API: the same services as the pages."""

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from enrollment.models import Participant
from safety import services
from safety.ctcae import TERMS
from safety.models import Action, AdverseEvent, Outcome, Relation, Seriousness
from trialsite import access
from trialsite.access import Capability


class AdverseEventSerializer(serializers.ModelSerializer):
    participant = serializers.CharField(source="participant.label", read_only=True)
    follows = serializers.IntegerField(source="follows_id", read_only=True, allow_null=True)

    class Meta:
        model = AdverseEvent
        fields = [
            "id",
            "participant",
            "sequence",
            "follows",
            "term",
            "term_text",
            "grade",
            "onset_date",
            "resolution_date",
            "serious",
            "seriousness",
            "awareness_at",
            "relation_infusion",
            "relation_tablets",
            "action_infusion",
            "action_tablets",
            "outcome",
            "special_interest",
            "recorded_at",
        ]


class EpisodeInput(serializers.Serializer):
    grade = serializers.IntegerField(min_value=1, max_value=5)
    onset_date = serializers.DateField()
    serious = serializers.BooleanField(default=False)
    seriousness = serializers.ListField(
        child=serializers.ChoiceField(choices=Seriousness.choices), required=False, default=list, max_length=6
    )
    awareness_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    relation_infusion = serializers.ChoiceField(choices=Relation.choices, required=False, allow_blank=True, default="")
    relation_tablets = serializers.ChoiceField(choices=Relation.choices, required=False, allow_blank=True, default="")
    action_infusion = serializers.ChoiceField(choices=Action.choices, required=False, allow_blank=True, default="")
    action_tablets = serializers.ChoiceField(choices=Action.choices, required=False, allow_blank=True, default="")
    outcome = serializers.ChoiceField(choices=Outcome.choices, default=Outcome.NOT_RECOVERED)
    # Grade 5 only: the death closes the participant's treatment and follow-up.
    died_on = serializers.DateField(required=False, allow_null=True, default=None)
    death_cause = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class AdverseEventInput(EpisodeInput):
    term = serializers.ChoiceField(choices=sorted(TERMS))
    term_text = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)


class ResolveInput(serializers.Serializer):
    resolution_date = serializers.DateField()
    # The whole list (one enum in the schema); the service refuses an outcome that does not end an event.
    outcome = serializers.ChoiceField(choices=Outcome.choices)


def _details(data: dict) -> services.AeDetails:
    data = dict(data)
    data["seriousness"] = tuple(data.get("seriousness") or ())
    return services.AeDetails(**data)


def _participant(request, pk: int) -> Participant:
    return access.get_for_user(
        Participant.objects.select_related("site__trial"), request.user, Capability.VIEW_PARTICIPANTS, pk=pk
    )


def _first(participant, sequence: int) -> AdverseEvent:
    first = AdverseEvent.objects.filter(participant=participant, sequence=sequence, follows__isnull=True).first()
    if first is None:
        raise Http404
    return first


class ParticipantAdverseEvents(APIView):
    @extend_schema(responses=AdverseEventSerializer(many=True))
    def get(self, request, pk: int):
        participant = _participant(request, pk)
        events = AdverseEvent.objects.filter(participant=participant).select_related("participant")
        return Response(AdverseEventSerializer(events.order_by("sequence", "onset_date", "id"), many=True).data)

    @extend_schema(request=AdverseEventInput, responses={201: AdverseEventSerializer})
    def post(self, request, pk: int):
        participant = _participant(request, pk)
        services.require_record(request.user, participant.site)
        payload = AdverseEventInput(data=request.data)
        payload.is_valid(raise_exception=True)
        event = services.ae_record(
            participant=participant, recorded_by=request.user, details=_details(payload.validated_data)
        )
        return Response(AdverseEventSerializer(event).data, status=status.HTTP_201_CREATED)


class AdverseEventGradeChange(APIView):
    @extend_schema(request=EpisodeInput, responses={201: AdverseEventSerializer})
    def post(self, request, pk: int, sequence: int):
        participant = _participant(request, pk)
        services.require_record(request.user, participant.site)
        first = _first(participant, sequence)
        payload = EpisodeInput(data=request.data)
        payload.is_valid(raise_exception=True)
        episode = services.ae_grade_change(
            event=first, recorded_by=request.user, details=_details(payload.validated_data)
        )
        return Response(AdverseEventSerializer(episode).data, status=status.HTTP_201_CREATED)


class AdverseEventResolve(APIView):
    @extend_schema(request=ResolveInput, responses=AdverseEventSerializer)
    def post(self, request, pk: int, sequence: int):
        participant = _participant(request, pk)
        services.require_record(request.user, participant.site)
        first = _first(participant, sequence)
        payload = ResolveInput(data=request.data)
        payload.is_valid(raise_exception=True)
        episode = services.ae_resolve(event=first, recorded_by=request.user, **payload.validated_data)
        return Response(AdverseEventSerializer(episode).data)
