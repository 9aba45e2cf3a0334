"""Randomization over the API: the same services as the web pages."""

from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from enrollment.models import Participant
from randomization import selectors, services
from randomization.models import RandomizationList
from trialsite import access, tenancy
from trialsite.access import Capability
from trialsite.models import Trial


class RandomizationListSerializer(serializers.ModelSerializer):
    class Meta:
        model = RandomizationList
        fields = [
            "id",
            "version",
            "source",
            "method",
            "sha256",
            "block_sizes",
            "slots_per_stratum",
            "reason",
            "created_at",
            "locked_at",
            "is_active",
        ]


class GenerateSerializer(serializers.Serializer):
    seed = serializers.CharField(max_length=200, write_only=True)
    # Not used by minimization (its list has no slots in advance).
    slots_per_stratum = serializers.IntegerField(min_value=1, max_value=100_000, required=False)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class ImportSerializer(serializers.Serializer):
    csv_text = serializers.CharField(max_length=5 * 1024 * 1024)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class LockSerializer(serializers.Serializer):
    password = serializers.CharField(max_length=200)


class UnblindSerializer(serializers.Serializer):
    password = serializers.CharField(max_length=200)
    reason = serializers.CharField(max_length=2000)


class RandomizedSerializer(serializers.Serializer):
    randomization_number = serializers.CharField()
    randomized_at = serializers.DateTimeField()
    visits = serializers.IntegerField()


class UnblindedSerializer(serializers.Serializer):
    randomization_number = serializers.CharField()
    arm_code = serializers.CharField()
    arm_name = serializers.CharField()


def _trial_for(user) -> Trial:
    access.require(user, Capability.MANAGE_RANDOMIZATION)
    return tenancy.trial_for(user)


class ListIndex(generics.ListAPIView):
    serializer_class = RandomizationListSerializer

    def get_queryset(self):
        access.require(self.request.user, Capability.MANAGE_RANDOMIZATION)
        return selectors.lists_for(self.request.user)

    @extend_schema(request=GenerateSerializer, responses={201: RandomizationListSerializer})
    def post(self, request):
        trial = _trial_for(request.user)
        payload = GenerateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        created = services.list_generate(trial=trial, created_by=request.user, **payload.validated_data)
        return Response(RandomizationListSerializer(created).data, status=status.HTTP_201_CREATED)


class ListImport(APIView):
    @extend_schema(request=ImportSerializer, responses={201: RandomizationListSerializer})
    def post(self, request):
        trial = _trial_for(request.user)
        payload = ImportSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        created = services.list_import(trial=trial, created_by=request.user, **payload.validated_data)
        return Response(RandomizationListSerializer(created).data, status=status.HTTP_201_CREATED)


class ListLock(APIView):
    @extend_schema(request=LockSerializer, responses=RandomizationListSerializer)
    def post(self, request, pk: int):
        randomization_list = access.get_object_or_404(selectors.lists_for(request.user), pk=pk)
        payload = LockSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        locked = services.list_lock(
            randomization_list=randomization_list,
            locked_by=request.user,
            password=payload.validated_data["password"],
            request=request,
        )
        return Response(RandomizationListSerializer(locked).data)


class ParticipantRandomize(APIView):
    @extend_schema(request=None, responses=RandomizedSerializer)
    def post(self, request, pk: int):
        participant = services.participant_randomize_reachable(pk=pk, randomized_by=request.user, request=request)
        return Response(
            RandomizedSerializer(
                {
                    "randomization_number": participant.randomization_number,
                    "randomized_at": participant.randomized_at,
                    "visits": participant.planned_visits,
                }
            ).data
        )


class ParticipantUnblind(APIView):
    @extend_schema(request=UnblindSerializer, responses=UnblindedSerializer)
    def post(self, request, pk: int):
        participant = access.get_for_user(Participant.objects.all(), request.user, Capability.EMERGENCY_UNBLIND, pk=pk)
        payload = UnblindSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        arm = services.participant_unblind(
            participant=participant, unblinded_by=request.user, request=request, **payload.validated_data
        )
        participant.refresh_from_db()
        return Response(
            UnblindedSerializer(
                {"randomization_number": participant.randomization_number, "arm_code": arm.code, "arm_name": arm.name}
            ).data
        )
