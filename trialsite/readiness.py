"""What each role's home page says about its site being ready for the day: a short checklist
with, for each missing step, who must do it and a link to it.

Blinded roles read the same facts as everybody, and none of them depends on an arm: kits are
"at the site" only as a whole (every kit type can be served, whatever its content), never per
content."""

from __future__ import annotations

import dataclasses
from urllib.parse import quote

from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext, pgettext

from trialsite import access
from trialsite.access import Capability
from trialsite.models import Role, Site

LIST, KITS, SIGNATURE, WAITING, SHEETS = "list", "kits", "signature", "waiting", "sheets"

# Which steps each role sees at its site, in the order it meets them.
STEPS_FOR_ROLE: dict[str, tuple[str, ...]] = {
    Role.COORDINATOR: (LIST, KITS, SIGNATURE, WAITING),
    Role.INVESTIGATOR: (LIST, KITS, SIGNATURE, WAITING),
    Role.PHARMACIST: (KITS, LIST),
    Role.SUPPLY_MANAGER: (KITS, LIST),
    Role.STATISTICIAN: (LIST, SHEETS),
    Role.MONITOR: (LIST, KITS, SIGNATURE),
}


@dataclasses.dataclass
class Step:
    key: str
    label: str
    done: bool
    detail: str = ""
    # For a step not done: what must happen, who does it, and where.
    todo: str = ""
    role_label: str = ""
    people: list[str] = dataclasses.field(default_factory=list)
    url: str = ""
    mailto: str = ""


@dataclasses.dataclass
class Checklist:
    site: Site
    role_label: str
    steps: list[Step]

    @property
    def ready(self) -> bool:
        return all(step.done for step in self.steps)


def _url(name: str, fallback: str = "home") -> str:
    try:
        return reverse(name)
    except NoReverseMatch:
        return reverse(fallback)


def _address(step: Step, *, viewer, site: Site, capability: str, role: str, url: str) -> Step:
    """Point a missing step at the role that does it: a link for a viewer who can do it
    themselves, else an e-mail to the people who hold the role at the site."""
    step.role_label = str(Role(role).label)
    holders = list(access.users_with(capability, site).order_by("last_name", "first_name", "username"))
    step.people = [person.get_full_name() or person.get_username() for person in holders]
    if access.can(viewer, capability, site):
        step.url = url
    else:
        emails = [person.email for person in holders if person.email]
        if emails:
            subject = f"{site.trial.nct_id} {site.code}: {step.todo}"
            step.mailto = f"mailto:{','.join(emails)}?subject={quote(subject)}"
    return step


def _list_step(site: Site, viewer) -> Step:
    from randomization.models import RandomizationList

    done = RandomizationList.objects.filter(trial=site.trial, is_active=True, locked_at__isnull=False).exists()
    step = Step(LIST, _("Randomization list locked"), done)
    if not done:
        step.todo = _("Generate or import a randomization list and lock it")
        _address(
            step,
            viewer=viewer,
            site=site,
            capability=Capability.MANAGE_RANDOMIZATION,
            role=Role.STATISTICIAN,
            url=_url("randomization-lists"),
        )
    return step


def _kits_step(site: Site, viewer) -> Step:
    from dosing.models import Kit, KitStatus, Shipment
    from dosing.services import kit_contents_by_type

    today = timezone.localdate(timezone=site.zone)
    in_stock = set(
        Kit.objects.filter(site=site, status=KitStatus.AT_SITE, label_expiry__gte=today)
        .values_list("kit_type", "content")
        .distinct()
    )
    wanted = {
        (kit_type, content) for kit_type, contents in kit_contents_by_type(site.trial).items() for content in contents
    }
    # One answer for the whole site: a content short reads exactly like every kit short.
    done = bool(wanted) and wanted <= in_stock
    step = Step(
        KITS,
        _("Kits at the site"),
        done,
        detail=pgettext("kits at the site", "yes") if done else pgettext("kits at the site", "no"),
    )
    if done:
        return step
    if Shipment.objects.filter(site=site, received_at__isnull=True).exists():
        step.todo = _("Receive the shipment on its way to the site")
        return _address(
            step, viewer=viewer, site=site, capability=Capability.DISPENSE, role=Role.PHARMACIST, url=_url("pharmacy")
        )
    step.todo = _("Ship kits to the site")
    return _address(
        step,
        viewer=viewer,
        site=site,
        capability=Capability.MANAGE_SUPPLY,
        role=Role.SUPPLY_MANAGER,
        url=_url("supply"),
    )


def _signature_step(site: Site, viewer) -> Step:
    required = site.trial.protocol.randomization.require_eligibility_signature
    if not required:
        return Step(SIGNATURE, _("Eligibility signature before randomization"), True, detail=_("not required"))
    done = access.users_with(Capability.SIGN_ELIGIBILITY, site).exists()
    step = Step(
        SIGNATURE,
        _("Eligibility signature before randomization"),
        done,
        detail=_("required; an investigator at the site can sign")
        if done
        else _("required; nobody at the site can sign"),
    )
    if not done:
        step.todo = _("Give the site a principal investigator")
        step.role_label = _("The trial's administrator")
    return step


def _waiting_step(site: Site, viewer) -> Step:
    from enrollment.models import Outcome, Participant, ParticipantStatus

    if not site.trial.protocol.randomization.require_eligibility_signature:
        return Step(WAITING, _("Participants waiting for the PI's eligibility signature"), True, detail="0")
    waiting = Participant.objects.filter(
        site=site,
        status=ParticipantStatus.ENROLLED,
        screening__outcome=Outcome.ELIGIBLE,
        eligibility_signature__isnull=True,
    ).count()
    step = Step(
        WAITING, _("Participants waiting for the PI's eligibility signature"), waiting == 0, detail=str(waiting)
    )
    if waiting:
        step.todo = ngettext(
            "Sign the eligibility of %(count)d participant",
            "Sign the eligibility of %(count)d participants",
            waiting,
        ) % {"count": waiting}
        _address(
            step,
            viewer=viewer,
            site=site,
            capability=Capability.SIGN_ELIGIBILITY,
            role=Role.INVESTIGATOR,
            url=_url("signature-queue", "participant-list"),
        )
    return step


def _sheets_step(site: Site, viewer) -> Step:
    from enrollment.models import Participant
    from randomization.models import CodeBreakSheetSet

    randomized = Participant.objects.filter(site=site, randomization_number__gt="").count()
    printed = (
        CodeBreakSheetSet.objects.filter(site=site)
        .order_by("-generated_at")
        .values_list("sheet_count", flat=True)
        .first()
        or 0
    )
    done = printed >= randomized
    step = Step(
        SHEETS,
        _("Sealed code-break sheets printed for every randomized participant"),
        done,
        detail=_("%(printed)d of %(randomized)d") % {"printed": min(printed, randomized), "randomized": randomized},
    )
    if not done:
        step.todo = _("Print the sealed code-break sheets")
        _address(
            step,
            viewer=viewer,
            site=site,
            capability=Capability.MANAGE_RANDOMIZATION,
            role=Role.STATISTICIAN,
            url=_url("code-break-sheets"),
        )
    return step


STEP_BUILDERS = {
    LIST: _list_step,
    KITS: _kits_step,
    SIGNATURE: _signature_step,
    WAITING: _waiting_step,
    SHEETS: _sheets_step,
}


def checklists_for(user, *, trial=None) -> list[Checklist]:
    """One checklist per role the user holds (in `trial`, when given), each for that role's site."""
    from trialsite.models import StaffRole

    checklists = []
    staff_roles = StaffRole.objects.filter(user=user).select_related("site__trial").order_by("site__code", "role")
    if trial is not None:
        staff_roles = staff_roles.filter(site__trial=trial)
    for staff_role in staff_roles:
        keys = STEPS_FOR_ROLE.get(staff_role.role, ())
        if not keys:
            continue
        steps = [STEP_BUILDERS[key](staff_role.site, user) for key in keys]
        checklists.append(Checklist(site=staff_role.site, role_label=str(staff_role.get_role_display()), steps=steps))
    return checklists
