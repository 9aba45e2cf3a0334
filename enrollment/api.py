"""Enrollment over the API: the same services as the web forms."""

from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from enrollment import selectors, services
from enrollment.models import Answer, Outcome, Participant, ParticipantStatus, Screening, Sex
from trialsite import access
from trialsite.access import Capability


class ScreeningSerializer(serializers.ModelSerializer):
    site = serializers.SlugRelatedField(slug_field="code", read_only=True)
    hospital_record_number = serializers.CharField(source="masked_record_number", read_only=True)
    participant = serializers.SerializerMethodField()

    class Meta:
        model = Screening
        fields = [
            "id",
            "site",
            "initials",
            "sex",
            "hospital_record_number",
            "screening_date",
            "outcome",
            "reasons",
            "participant",
        ]

    def get_participant(self, screening) -> str | None:
        participant = getattr(screening, "participant", None)
        return participant.label if participant else None


class ScreeningCreateSerializer(serializers.Serializer):
    # Needed only from someone who screens at several sites of the trial.
    site = serializers.CharField(max_length=20, required=False)
    initials = serializers.CharField(max_length=4)
    date_of_birth = serializers.DateField()
    sex = serializers.ChoiceField(choices=Sex.choices)
    hospital_record_number = serializers.CharField(max_length=40)
    screening_date = serializers.DateField()
    consent_version = serializers.CharField(max_length=40)
    consent_date = serializers.DateField()
    answers = serializers.DictField(child=serializers.ChoiceField(choices=Answer.choices, allow_null=True))
    stratification = serializers.DictField(child=serializers.CharField(max_length=50), required=False)


class ScreeningUpdateSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    date_of_birth = serializers.DateField(required=False)
    screening_date = serializers.DateField(required=False)
    initials = serializers.CharField(required=False, max_length=4)
    sex = serializers.ChoiceField(choices=Sex.choices, required=False)
    hospital_record_number = serializers.CharField(required=False, max_length=40)
    consent_version = serializers.CharField(required=False, max_length=40)
    consent_date = serializers.DateField(required=False)
    answers = serializers.DictField(
        child=serializers.ChoiceField(choices=Answer.choices, allow_null=True), required=False
    )
    stratification = serializers.DictField(child=serializers.CharField(max_length=50), required=False)


class ParticipantSerializer(serializers.ModelSerializer):
    # The participant's key is its screening's.
    id = serializers.IntegerField(source="pk", read_only=True)
    site = serializers.SlugRelatedField(slug_field="code", read_only=True)
    initials = serializers.CharField(source="screening.initials", read_only=True)
    eligibility_signed = serializers.SerializerMethodField()

    class Meta:
        model = Participant
        fields = [
            "id",
            "screening_number",
            "randomization_number",
            "site",
            "initials",
            "status",
            "randomized_at",
            "unblinded_at",
            "eligibility_signed",
        ]

    def get_eligibility_signed(self, participant) -> bool:
        return participant.eligibility_signature_id is not None


class SignEligibilitySerializer(serializers.Serializer):
    password = serializers.CharField(max_length=200)


class WithdrawSerializer(serializers.Serializer):
    withdrawn_on = serializers.DateField()
    reason = serializers.CharField(max_length=2000)


class ScreeningIndex(generics.ListAPIView):
    serializer_class = ScreeningSerializer

    @extend_schema(parameters=[OpenApiParameter("outcome", str, enum=Outcome.values)])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        access.require(self.request.user, Capability.VIEW_PARTICIPANTS)
        wanted = self.request.query_params.get("outcome")
        return selectors.screenings_for(self.request.user, outcome=wanted if wanted in Outcome.values else None)

    @extend_schema(request=ScreeningCreateSerializer, responses={201: ScreeningSerializer})
    def post(self, request):
        access.require(request.user, Capability.SCREEN)
        payload = ScreeningCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        fields = dict(payload.validated_data)
        try:
            site = access.choose_site(request.user, Capability.SCREEN, fields.pop("site", None))
        except access.SiteNotChosen:
            raise serializers.ValidationError(
                {"site": [_("You work at several sites of this trial: name the site's code.")]}
            ) from None
        screening = services.screening_create(site=site, screened_by=request.user, request=request, **fields)
        return Response(ScreeningSerializer(screening).data, status=status.HTTP_201_CREATED)


class ScreeningDetail(generics.RetrieveAPIView):
    serializer_class = ScreeningSerializer

    def get_object(self):
        return access.get_for_user(
            Screening.objects.select_related("site"),
            self.request.user,
            Capability.VIEW_PARTICIPANTS,
            pk=self.kwargs["pk"],
        )

    @extend_schema(request=ScreeningUpdateSerializer, responses=ScreeningSerializer)
    def patch(self, request, pk: int):
        screening = access.get_for_user(Screening.objects.all(), request.user, Capability.SCREEN, pk=pk)
        payload = ScreeningUpdateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = dict(payload.validated_data)
        screening = services.screening_update(
            screening=screening, changed_by=request.user, reason=data.pop("reason", ""), **data
        )
        return Response(ScreeningSerializer(screening).data)


@extend_schema(parameters=[OpenApiParameter("q", str), OpenApiParameter("status", str, enum=ParticipantStatus.values)])
class ParticipantIndex(generics.ListAPIView):
    serializer_class = ParticipantSerializer

    def get_queryset(self):
        access.require(self.request.user, Capability.VIEW_PARTICIPANTS)
        wanted = self.request.query_params.get("status")
        return selectors.participants_for(
            self.request.user,
            search=(self.request.query_params.get("q") or "").strip() or None,
            status=wanted if wanted in ParticipantStatus.values else None,
        ).select_related("eligibility_signature")


class ParticipantDetail(generics.RetrieveAPIView):
    serializer_class = ParticipantSerializer

    def get_object(self):
        return access.get_for_user(
            Participant.objects.select_related("screening", "site"),
            self.request.user,
            Capability.VIEW_PARTICIPANTS,
            pk=self.kwargs["pk"],
        )


class ParticipantSignEligibility(APIView):
    @extend_schema(request=SignEligibilitySerializer, responses=ParticipantSerializer)
    def post(self, request, pk: int):
        participant = access.get_for_user(Participant.objects.all(), request.user, Capability.SIGN_ELIGIBILITY, pk=pk)
        payload = SignEligibilitySerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        services.eligibility_sign(
            participant=participant, signer=request.user, request=request, password=payload.validated_data["password"]
        )
        participant.refresh_from_db()
        return Response(ParticipantSerializer(participant).data)


class ParticipantWithdraw(APIView):
    @extend_schema(request=WithdrawSerializer, responses=ParticipantSerializer)
    def post(self, request, pk: int):
        participant = access.get_for_user(Participant.objects.all(), request.user, Capability.SCREEN, pk=pk)
        payload = WithdrawSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        services.participant_withdraw(participant=participant, withdrawn_by=request.user, **payload.validated_data)
        participant.refresh_from_db()
        return Response(ParticipantSerializer(participant).data)
