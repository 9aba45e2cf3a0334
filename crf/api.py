"""Case report forms over the API: the same service as the pages. Item errors come back as
{"item_code": ["message"]}; values are the stored JSON (decimals as text, dates as YYYY-MM-DD)."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from crf import selectors, services
from crf.models import FormRecord, FormStatus
from enrollment.models import Participant
from trialsite import access
from trialsite.access import Capability


class FormSaveSerializer(serializers.Serializer):
    values = serializers.DictField(child=serializers.JSONField(allow_null=True))
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class WarningSerializer(serializers.Serializer):
    item = serializers.CharField()
    text = serializers.CharField()
    text_zh = serializers.CharField()


class FormRecordSerializer(serializers.Serializer):
    participant = serializers.IntegerField()
    form = serializers.CharField()
    visit_code = serializers.CharField(allow_null=True)
    sequence = serializers.IntegerField(allow_null=True)
    status = serializers.ChoiceField(choices=FormStatus.choices)
    protocol_version = serializers.CharField(allow_blank=True)
    values = serializers.DictField(child=serializers.JSONField(allow_null=True))
    warnings = WarningSerializer(many=True)
    missing = serializers.ListField(child=serializers.CharField())


class FormSummarySerializer(serializers.Serializer):
    form = serializers.CharField()
    kind = serializers.CharField()
    visit_code = serializers.CharField(allow_null=True)
    sequence = serializers.IntegerField(allow_null=True)
    status = serializers.ChoiceField(choices=FormStatus.choices)


def _participant(request, pk: int, capability: str = Capability.VIEW_PARTICIPANTS) -> Participant:
    return access.get_for_user(Participant.objects.select_related("site__trial"), request.user, capability, pk=pk)


def _form(participant, form_code, visit_code):
    try:
        return services.form_spec(participant.site.trial.protocol, form_code, visit_code)
    except services.UnknownForm:
        raise access.Http404("Not found") from None


def _body(user, participant, form, visit_code, record) -> dict:
    view = selectors.record_view(user, participant, form, record)
    return {
        "participant": participant.pk,
        "form": form.code,
        "visit_code": visit_code,
        "sequence": record.sequence if record else None,
        "status": view["status"],
        # The version's number, as before the record pointed at the loaded version itself.
        "protocol_version": record.protocol_version.version if record and record.protocol_version else "",
        "values": view["values"],
        "warnings": record.warnings if record else [],
        "missing": view["missing"],
    }


def _save(request, participant, form, visit_code, record, created_status=status.HTTP_200_OK):
    access.require(request.user, Capability.RECORD_VISITS, participant.site_id)
    payload = FormSaveSerializer(data=request.data)
    payload.is_valid(raise_exception=True)
    result = services.form_save(
        user=request.user,
        values=payload.validated_data["values"],
        reason=payload.validated_data.get("reason", ""),
        record=record,
        participant=participant,
        form_code=form.code,
        visit_code=visit_code,
    )
    return Response(_body(request.user, participant, form, visit_code, result.record), status=created_status)


class ParticipantForms(APIView):
    @extend_schema(responses=FormSummarySerializer(many=True))
    def get(self, request, pk: int):
        forms = selectors.participant_forms(_participant(request, pk))
        rows = [
            {
                "form": entry.form.code,
                "kind": "visit",
                "visit_code": visit_code,
                "sequence": None,
                "status": entry.status,
            }
            for visit_code, entries in forms.visits
            for entry in entries
        ]
        rows += [
            {
                "form": log.form.code,
                "kind": "log",
                "visit_code": None,
                "sequence": entry.record.sequence,
                "status": entry.status,
            }
            for log, entries in forms.logs
            for entry in entries
        ]
        return Response(rows)


class VisitForm(APIView):
    @extend_schema(responses=FormRecordSerializer)
    def get(self, request, pk: int, form_code: str, visit_code: str):
        participant = _participant(request, pk)
        form = _form(participant, form_code, visit_code)
        record = FormRecord.objects.filter(participant=participant, form_code=form.code, visit_code=visit_code).first()
        return Response(_body(request.user, participant, form, visit_code, record))

    @extend_schema(request=FormSaveSerializer, responses=FormRecordSerializer)
    def put(self, request, pk: int, form_code: str, visit_code: str):
        participant = _participant(request, pk)
        form = _form(participant, form_code, visit_code)
        record = FormRecord.objects.filter(participant=participant, form_code=form.code, visit_code=visit_code).first()
        return _save(request, participant, form, visit_code, record)


class LogEntries(APIView):
    @extend_schema(responses=FormRecordSerializer(many=True))
    def get(self, request, pk: int, form_code: str):
        participant = _participant(request, pk)
        form = _form(participant, form_code, None)
        records = FormRecord.objects.filter(participant=participant, form_code=form.code, visit_code=None)
        return Response(
            [_body(request.user, participant, form, None, record) for record in records.order_by("sequence")]
        )

    @extend_schema(request=FormSaveSerializer, responses={201: FormRecordSerializer})
    def post(self, request, pk: int, form_code: str):
        participant = _participant(request, pk)
        form = _form(participant, form_code, None)
        return _save(request, participant, form, None, None, created_status=status.HTTP_201_CREATED)


class LogEntry(APIView):
    def _record(self, participant, form, sequence):
        return access.get_object_or_404(
            FormRecord.objects.all(), participant=participant, form_code=form.code, visit_code=None, sequence=sequence
        )

    @extend_schema(responses=FormRecordSerializer)
    def get(self, request, pk: int, form_code: str, sequence: int):
        participant = _participant(request, pk)
        form = _form(participant, form_code, None)
        return Response(_body(request.user, participant, form, None, self._record(participant, form, sequence)))

    @extend_schema(request=FormSaveSerializer, responses=FormRecordSerializer)
    def put(self, request, pk: int, form_code: str, sequence: int):
        participant = _participant(request, pk)
        form = _form(participant, form_code, None)
        return _save(request, participant, form, None, self._record(participant, form, sequence))
