"""Sealed code-break sheets: the site's offline backup for emergency unblinding.

An unblinded statistician prints one sheet per randomized participant of a site; the arm sits
under a panel that is torn off or scratched to read it. When the system cannot be reached the
PI opens the participant's sheet, and records afterwards which sheet was opened, when and why:
that record is an emergency unblinding like any other (the participant is flagged, the sponsor
is told, without the arm)."""

from __future__ import annotations

import dataclasses
import datetime
import io

from django.core.mail import send_mail
from django.db import transaction
from django.http import Http404
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from enrollment.models import Participant
from randomization.models import CodeBreakSheetSet, RandomizationList, Slot, Unblinding
from randomization.services import require_unblinding_allowed
from trialsite import access, two_factor
from trialsite.access import Capability
from trialsite.audit import audit_context
from trialsite.exceptions import ReasonRequired, TrialRuleError
from trialsite.models import Site
from trialsite.reauth import confirm_password


class NoSheetToPrint(TrialRuleError):
    default_message = gettext_lazy(
        "No participant is randomized at this site yet, so there is no code-break sheet to print."
    )


class WrongSheet(TrialRuleError):
    def __init__(self, message=None, *, field: str | None = "sheet_number"):
        super().__init__(message, field=field)


class OpenedAtInvalid(TrialRuleError):
    def __init__(self, message=None, *, field: str | None = "opened_at"):
        super().__init__(message, field=field)


@dataclasses.dataclass(frozen=True)
class Sheet:
    number: int
    randomization_number: str
    arm_code: str
    arm_name: str


def may_print(user, site: Site | int) -> bool:
    """Only someone who both sees allocations and manages randomization at the site."""
    return access.can(user, Capability.VIEW_ALLOCATION, site) and access.can(
        user, Capability.MANAGE_RANDOMIZATION, site
    )


def sites_to_print_for(user):
    site_ids = access.site_ids_with(user, Capability.VIEW_ALLOCATION) & access.site_ids_with(
        user, Capability.MANAGE_RANDOMIZATION
    )
    return Site.objects.filter(pk__in=site_ids).select_related("trial").order_by("code")


def sheet_number_of(participant: Participant) -> int | None:
    """The sheet of a participant is numbered as their randomization number (NT-0007: sheet 7),
    so a reprint after further randomizations keeps every number."""
    number = participant.randomization_number or ""
    tail = number.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def sheets_for(site: Site) -> list[Sheet]:
    slots = (
        Slot.objects.filter(participant__site=site, participant__isnull=False)
        .select_related("participant", "arm")
        .order_by("participant__randomized_at", "participant__pk")
    )
    sheets = [
        Sheet(
            number=sheet_number_of(slot.participant),
            randomization_number=slot.participant.randomization_number,
            arm_code=slot.arm.code,
            arm_name=slot.arm.name,
        )
        for slot in slots
        if slot.participant.randomization_number
    ]
    return sorted(sheets, key=lambda sheet: sheet.number)


def sheets_generate(*, site: Site, generated_by, password: str, request=None) -> bytes:
    """The PDF of the site's sheets, one page each; the printing is recorded (and so audited).
    It puts every participant's arm on paper: the password again, and the second factor when
    the user has one, as for locking a list."""
    if not may_print(generated_by, site):
        raise Http404("Not found")
    two_factor.require_verified(user=generated_by, request=request)
    confirm_password(user=generated_by, password=password, request=request)
    active = RandomizationList.objects.filter(trial=site.trial, is_active=True).first()
    sheets = sheets_for(site)
    if active is None or not sheets:
        raise NoSheetToPrint()
    with audit_context(actor=generated_by, reason="Sealed code-break sheets printed"):
        printing = CodeBreakSheetSet.objects.create(
            randomization_list=active, site=site, generated_by=generated_by, sheet_count=len(sheets)
        )
    return _pdf(site=site, sheets=sheets, printing=printing)


def _pdf(*, site: Site, sheets: list[Sheet], printing: CodeBreakSheetSet) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.pdfgen.canvas import Canvas

    from reports.pdf import _font_names

    font, bold = _font_names()
    trial = site.trial
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=A4, initialFontName=font)
    canvas.setTitle(_("Sealed code-break sheets, %(site)s") % {"site": site.code})
    width, height = A4
    left = 20 * mm
    instructions = [
        _("Open only in a medical emergency, when the system cannot be reached and the treating"),
        _("physician needs the allocation to treat this participant."),
        _("Afterwards record the opening in the system: the participant's page, Emergency unblinding,"),
        _("Record a sealed sheet opened (sheet number, when, why). The sponsor is then notified."),
        _("Keep the sheets sealed, in a locked place the PI can reach at any hour."),
    ]
    printed = timezone.localtime(printing.generated_at, site.zone).strftime("%Y-%m-%d %H:%M")
    for sheet in sheets:
        canvas.setFillColor(colors.black)
        canvas.setFont(bold, 15)
        canvas.drawString(left, height - 25 * mm, _("SEALED CODE-BREAK SHEET: CONFIDENTIAL"))
        canvas.setFont(bold, 28)
        canvas.drawRightString(width - left, height - 27 * mm, _("Sheet %(number)d") % {"number": sheet.number})
        canvas.setFont(font, 11)
        lines = [
            _("Trial: %(trial)s") % {"trial": f"{trial.nct_id} {trial.title}"[:90]},
            _("Site: %(site)s") % {"site": f"{site.code} {site.name}"[:90]},
            _("Printed %(when)s by %(who)s (printing %(id)d)")
            % {
                "when": printed,
                "who": printing.generated_by.get_full_name() or printing.generated_by.get_username(),
                "id": printing.pk,
            },
        ]
        y = height - 42 * mm
        for line in lines:
            canvas.drawString(left, y, line)
            y -= 7 * mm
        canvas.setFont(bold, 20)
        canvas.drawString(
            left, y - 6 * mm, _("Randomization number: %(number)s") % {"number": sheet.randomization_number}
        )
        y -= 22 * mm
        canvas.setFont(font, 10.5)
        for line in instructions:
            canvas.drawString(left, y, line)
            y -= 6 * mm
        # The tear line and the panel the arm is printed under.
        y -= 8 * mm
        canvas.setDash(4, 3)
        canvas.line(left, y, width - left, y)
        canvas.setDash()
        canvas.setFont(font, 9)
        canvas.drawCentredString(width / 2, y + 2 * mm, _("Tear here, or scratch off the panel below"))
        panel_top = y - 10 * mm
        panel_height = 40 * mm
        canvas.setFillColor(colors.HexColor("#eeeeee"))
        canvas.rect(left, panel_top - panel_height, width - 2 * left, panel_height, stroke=1, fill=1)
        canvas.setFillColor(colors.black)
        canvas.setFont(font, 10)
        canvas.drawString(left + 5 * mm, panel_top - 9 * mm, _("Allocated arm"))
        canvas.setFont(bold, 18)
        canvas.drawString(left + 5 * mm, panel_top - 22 * mm, f"{sheet.arm_name} ({sheet.arm_code})"[:60])
        canvas.setFont(font, 9)
        canvas.drawString(
            left,
            20 * mm,
            _("Sheet %(number)d of the %(count)d sheets printed for %(site)s.")
            % {"number": sheet.number, "count": len(sheets), "site": site.code},
        )
        canvas.showPage()
    canvas.save()
    return buffer.getvalue()


def sealed_sheet_opening_record(
    *,
    participant: Participant,
    recorded_by,
    sheet_number: int,
    opened_at: datetime.datetime,
    reason: str,
    password: str,
    request=None,
) -> Unblinding:
    """Record that the participant's sealed sheet was opened: an emergency unblinding by the
    user who records it (the PI), made when the sheet was opened. The arm is shown to that user
    afterwards, so the record asks what the emergency unblinding asks (the password again, the
    second factor when the user has one), and the sheet number must be read off the opened sheet:
    nothing on the page or in a refusal says what it is."""
    if not access.can(recorded_by, Capability.EMERGENCY_UNBLIND, participant.site_id):
        raise Http404("Not found")
    require_unblinding_allowed(recorded_by, participant)
    if not (reason or "").strip():
        raise ReasonRequired(_("Give the medical reason the sheet was opened."))
    two_factor.require_verified(user=recorded_by, request=request)
    confirm_password(user=recorded_by, password=password, request=request)
    participant = Participant.objects.select_related("site__trial").get(pk=participant.pk)
    expected = sheet_number_of(participant)
    if expected is None:
        raise WrongSheet(_("Only a randomized participant has a code-break sheet."))
    if sheet_number != expected:
        raise WrongSheet(
            _("Sheet %(given)d is not the sheet of %(participant)s. Check the number on the sheet that was opened.")
            % {"participant": participant.randomization_number, "given": sheet_number}
        )
    if opened_at > timezone.now():
        raise OpenedAtInvalid(_("The time the sheet was opened cannot be in the future."))
    if participant.randomized_at and opened_at < participant.randomized_at:
        raise OpenedAtInvalid(_("The sheet cannot have been opened before the participant was randomized."))
    with audit_context(actor=recorded_by, reason=f"Emergency unblinding, sealed sheet {sheet_number} opened: {reason}"):
        unblinding = Unblinding.objects.create(
            participant=participant,
            site=participant.site,
            unblinded_by=recorded_by,
            reason=reason,
            method=Unblinding.Method.SEALED_SHEET,
            sheet_number=sheet_number,
            opened_at=opened_at,
        )
        Participant.objects.filter(pk=participant.pk, unblinded_at__isnull=True).update(unblinded_at=opened_at)
        trial = participant.site.trial

        def notify():
            send_mail(
                subject=(
                    f"{trial.nct_id}: emergency unblinding of participant {participant.randomization_number} "
                    "(sealed code-break sheet)"
                ),
                message=(
                    f"The sealed code-break sheet {sheet_number} of participant "
                    f"{participant.randomization_number} at {participant.site.code} was opened on "
                    f"{opened_at.astimezone(datetime.UTC):%Y-%m-%d %H:%M} UTC; "
                    f"{recorded_by.get_full_name() or recorded_by.get_username()} recorded it on "
                    f"{unblinding.unblinded_at:%Y-%m-%d %H:%M} UTC.\nReason: {reason}\n"
                    "The allocation is not part of this message."
                ),
                from_email=None,
                recipient_list=[trial.sponsor_contact_email],
            )
            Unblinding.objects.filter(pk=unblinding.pk).update(sponsor_notified_at=timezone.now())

        transaction.on_commit(notify)
    return unblinding
