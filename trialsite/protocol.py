"""Loading a protocol file (TOML) into the database, one trial per file.

The file is parsed and validated completely first (trialsite.protocol_schema): nothing is written
unless every key is right. Loading then creates or updates the trial, keeps every version of the
file, and refuses what would rewrite history: a site never moves to another trial or loses its
participants, an arm that has been used keeps its code, ratio and kit contents, and the arms
and ratios a locked randomization list was drawn with stay. Each refusal says exactly what it
refused."""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction
from django.db.models import ProtectedError

from trialsite.audit import audit_context
from trialsite.models import Arm, ProtocolVersion, Site, Trial
from trialsite.protocol_schema import Protocol, ProtocolError, parse_protocol

__all__ = ["LoadReport", "ProtocolError", "check_file", "load_protocol", "read_definition"]


def read_definition(path: Path) -> tuple[dict, Protocol]:
    """The raw document and its typed protocol, or ProtocolError naming each mistake's path."""
    try:
        with open(path, "rb") as protocol_file:
            document = tomllib.load(protocol_file)
    except tomllib.TOMLDecodeError as error:
        raise ProtocolError([f"{Path(path).name}: not valid TOML: {error}"], cross_checked=False) from None
    return _json_safe(document), parse_protocol(document)


def _json_safe(document):
    """TOML dates become ISO text so the document can be stored as JSON and parsed again alike."""
    if isinstance(document, dict):
        return {key: _json_safe(value) for key, value in document.items()}
    if isinstance(document, list):
        return [_json_safe(value) for value in document]
    if hasattr(document, "isoformat"):
        return document.isoformat()
    return document


def check_file(path: Path) -> Protocol:
    """Validate a protocol file without loading it (`load_protocol --check`)."""
    return read_definition(path)[1]


@dataclass
class LoadReport:
    trial: Trial
    created: bool
    version: ProtocolVersion
    new_version: bool
    changes: list[str] = field(default_factory=list)


def _allocation_basis(randomization) -> tuple:
    """What allocations rest on: the method, the site as a stratum, and each factor's levels."""
    return (
        randomization.method,
        randomization.stratify_by_site,
        tuple((factor.code, factor.levels) for factor in randomization.factors),
    )


def _refusals(trial: Trial, protocol: Protocol) -> list[str]:
    """What the new file would change that history forbids, in words, for an existing trial."""
    from enrollment.models import Participant, Screening
    from randomization.models import Slot

    refusals = []
    used_arm_ids = set(
        Slot.objects.filter(randomization_list__trial=trial, participant__isnull=False).values_list("arm_id", flat=True)
    )
    anyone_randomized = bool(used_arm_ids)
    current = trial.protocol
    if anyone_randomized and protocol.trial.masking != current.trial.masking:
        # Opening (or closing) the blind of a running trial is a decision of its own, not an
        # edit of a file: every blinded role would see every arm.
        refusals.append(
            f"trial.masking: participants are randomized under masking {current.trial.masking!r};"
            " it stays so (unblinding a trial is not a protocol reload)"
        )
    if anyone_randomized:
        # Allocations made so far rest on these strata (or minimization factors); new ones would
        # be balanced over other groups, and the audit could not re-derive them.
        old, new = current.randomization, protocol.randomization
        if _allocation_basis(old) != _allocation_basis(new):
            refusals.append(
                "randomization: participants are randomized by method "
                f"{old.method}, site stratification {old.stratify_by_site} and factors "
                f"{[factor.code for factor in old.factors]}; these stay as they are"
            )
    new_arms = {arm.code: arm for arm in protocol.arms}
    for arm in trial.arms.all():
        spec = new_arms.get(arm.code)
        if arm.pk not in used_arm_ids:
            if spec is None and anyone_randomized:
                refusals.append(f"arms: arm {arm.code} cannot be removed: the randomization list allocates to it")
            continue
        if spec is None:
            refusals.append(f"arms: arm {arm.code} has randomized participants and cannot be removed")
            continue
        if spec.ratio != arm.ratio:
            refusals.append(
                f"arms[{protocol.arms.index(spec)}].ratio: arm {arm.code} has randomized participants;"
                f" its ratio stays {arm.ratio} (a new ratio needs a new randomization list and trial design)"
            )
        if dict(spec.kit_contents) != dict(arm.kit_contents):
            refusals.append(
                f"arms[{protocol.arms.index(spec)}].kit_contents: arm {arm.code} has randomized participants;"
                f" its kit contents stay {dict(arm.kit_contents)}"
            )
    if anyone_randomized:
        known = set(trial.arms.values_list("code", flat=True))
        for index, spec in enumerate(protocol.arms):
            if spec.code not in known:
                refusals.append(
                    f"arms[{index}]: arm {spec.code} cannot be added once participants are randomized"
                    " (the randomization list does not know it)"
                )
    refusals += _locked_list_refusals(trial, protocol, refused_already=used_arm_ids if anyone_randomized else set())
    new_sites = {site.code: site for site in protocol.sites}
    for site in trial.sites.all():
        spec = new_sites.get(site.code)
        screened = Screening.objects.filter(site=site).count()
        if spec is None and screened:
            refusals.append(f"sites: site {site.code} has {screened} screening(s) and cannot be removed")
        elif spec is not None and spec.time_zone != site.time_zone and Participant.objects.filter(site=site).exists():
            refusals.append(
                f"sites[{protocol.sites.index(spec)}].time_zone: site {site.code} has participants whose visit"
                f" windows were set in {site.time_zone}; it stays {site.time_zone}"
            )
    return refusals


def _locked_list_refusals(trial: Trial, protocol: Protocol, *, refused_already: set) -> list[str]:
    """A locked list of slots drawn in advance (permuted blocks) was drawn for the arms and ratios
    in force, whether anyone has been allocated yet or not. A new ratio or a new arm would leave
    it allocating by the old ones while the protocol says otherwise, and the auditor, who
    re-derives the list from the protocol's arms, would find its slots changed. (A minimization
    list holds no slots: its allocations refuse rules it was not made with.)"""
    from randomization.models import RandomizationList

    locked = (
        RandomizationList.objects.filter(trial=trial, locked_at__isnull=False)
        .exclude(method=RandomizationList.Method.MINIMIZATION)
        .order_by("-version")
        .values_list("version", flat=True)
        .first()
    )
    if locked is None:
        return []
    refusals = []
    arms = {arm.code: arm for arm in trial.arms.all()}
    for index, spec in enumerate(protocol.arms):
        arm = arms.get(spec.code)
        if refused_already and (arm is None or arm.pk in refused_already):
            # Said above: no arm is added, and no used arm changes, once anyone is randomized.
            continue
        if arm is None:
            refusals.append(
                f"arms[{index}]: arm {spec.code} cannot be added: locked randomization list v{locked}"
                " was drawn without it"
            )
        elif spec.ratio != arm.ratio:
            refusals.append(
                f"arms[{index}].ratio: locked randomization list v{locked} was drawn with arm {arm.code}"
                f" at ratio {arm.ratio}; it stays {arm.ratio}"
            )
    return refusals


def load_protocol(path: Path, *, actor=None) -> Trial:
    return load_protocol_file(path, actor=actor).trial


def load_protocol_file(path: Path, *, actor=None) -> LoadReport:
    """Create or update the trial of the file at `path`; a changed file becomes a new protocol
    version (or replaces the same version while nobody has been screened). Raises ProtocolError
    listing every refusal; nothing is written then."""
    document, protocol = read_definition(path)
    digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
    info = protocol.trial
    trial_fields = {
        "title": info.title,
        "sponsor": info.sponsor,
        "sponsor_protocol_id": info.sponsor_protocol_id,
        "sponsor_contact_email": info.sponsor_contact_email,
        "target_enrollment": info.target_enrollment,
        "definition": document,
        "definition_sha256": digest,
    }
    with audit_context(actor=actor, reason=f"Protocol loaded from {Path(path).name}"), transaction.atomic():
        trial = Trial.objects.select_for_update().filter(nct_id=info.nct_id).first()
        created = trial is None
        changes: list[str] = []
        if not created:
            refusals = _refusals(trial, protocol)
            if refusals:
                raise ProtocolError(refusals)
        version = ProtocolVersion.objects.filter(trial=trial, version=info.protocol_version).first() if trial else None
        new_version = False
        if version is not None and trial.current_version_id not in (None, version.pk):
            # The rules in force never go back to an earlier file: records would be captured
            # under rules that were amended away.
            raise ProtocolError(
                [
                    f"trial.protocol_version: version {version.version} was replaced by version"
                    f" {trial.current_version.version}, which is in force; an amendment needs a new version"
                ]
            )
        if version is not None and version.sha256 != digest:
            from enrollment.models import Screening

            if Screening.objects.filter(site__trial=trial).exists():
                raise ProtocolError(
                    [
                        f"trial.protocol_version: version {info.protocol_version} is already loaded with other"
                        " content and participants were screened under it; an amendment needs a new version"
                    ]
                )
        if created:
            trial = Trial.objects.create(nct_id=info.nct_id, **trial_fields)
            changes.append(f"trial {info.nct_id} created")
        elif trial.definition_sha256 != digest:
            for name, value in trial_fields.items():
                setattr(trial, name, value)
            trial.save()
        if version is None:
            previous = trial.current_version
            if previous and previous.effective_date and not info.effective_date:
                raise ProtocolError(
                    [
                        f"trial.effective_date: is required: version {previous.version} in force took effect"
                        f" on {previous.effective_date}"
                    ]
                )
            if (
                previous
                and info.effective_date
                and previous.effective_date
                and info.effective_date < previous.effective_date
            ):
                raise ProtocolError(
                    [
                        f"trial.effective_date: {info.effective_date} is before the effective date"
                        f" {previous.effective_date} of version {previous.version} in force"
                    ]
                )
            version = ProtocolVersion.objects.create(
                trial=trial,
                version=info.protocol_version,
                effective_date=info.effective_date,
                definition=document,
                sha256=digest,
                loaded_by=actor,
            )
            new_version = True
            changes.append(f"protocol version {version.version} recorded")
        elif version.sha256 != digest:
            version.definition, version.sha256, version.effective_date = document, digest, info.effective_date
            version.save()
            changes.append(f"protocol version {version.version} replaced (nobody screened yet)")
        if trial.current_version_id != version.pk:
            trial.current_version = version
            trial.save(update_fields=["current_version"])
            changes.append(f"protocol version {version.version} is in force")
        for order, spec in enumerate(protocol.arms):
            arm, arm_created = Arm.objects.get_or_create(
                trial=trial,
                code=spec.code,
                defaults={
                    "name": spec.name,
                    "ratio": spec.ratio,
                    "kit_contents": dict(spec.kit_contents),
                    "order": order,
                },
            )
            wanted = {"name": spec.name, "ratio": spec.ratio, "kit_contents": dict(spec.kit_contents), "order": order}
            if arm_created:
                changes.append(f"arm {spec.code} added")
            elif any(getattr(arm, name) != value for name, value in wanted.items()):
                for name, value in wanted.items():
                    setattr(arm, name, value)
                arm.save()
                changes.append(f"arm {spec.code} updated")
        unused = trial.arms.exclude(code__in=[spec.code for spec in protocol.arms])
        for arm in unused:
            try:
                arm.delete()
            except ProtectedError:
                raise ProtocolError(
                    [f"arms: arm {arm.code} is in a randomization list; it cannot be removed from the file"]
                ) from None
            changes.append(f"arm {arm.code} removed")
        for spec in protocol.sites:
            # Looked up within this trial only: a site code another trial uses is another site.
            site, site_created = Site.objects.get_or_create(
                trial=trial, code=spec.code, defaults={"name": spec.name, "time_zone": spec.time_zone}
            )
            if site_created:
                changes.append(f"site {spec.code} added")
            elif (site.name, site.time_zone) != (spec.name, spec.time_zone):
                site.name, site.time_zone = spec.name, spec.time_zone
                site.save(update_fields=["name", "time_zone"])
                changes.append(f"site {spec.code} updated")
        gone = trial.sites.exclude(code__in=[spec.code for spec in protocol.sites])
        for site in gone:
            # Only sites without screenings reach here (_refusals); their staff roles go with them.
            try:
                with transaction.atomic():
                    site.staff_roles.all().delete()
                    site.delete()
            except ProtectedError:
                raise ProtocolError(
                    [f"sites: site {site.code} holds kits or other records; it cannot be removed from the file"]
                ) from None
            changes.append(f"site {site.code} removed")
    return LoadReport(trial=trial, created=created, version=version, new_version=new_version, changes=changes)
