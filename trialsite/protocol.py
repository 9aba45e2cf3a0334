"""Loading a protocol definition file (TOML) into the database.

The file is checked before anything is written: a missing key, an unknown kit type or an arm
whose kits do not cover every kit type is refused with the path of the offending entry."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from zoneinfo import available_timezones

from django.core.exceptions import ValidationError
from django.db import transaction

from trialsite.audit import audit_context
from trialsite.models import Arm, Site, Trial

REQUIRED_SECTIONS = ("trial", "sites", "arms", "eligibility", "randomization", "visits", "dosing", "kits")
TRIAL_KEYS = ("nct_id", "title", "sponsor", "sponsor_protocol_id", "sponsor_contact_email", "target_enrollment")


def _require(mapping: dict, key: str, where: str):
    if key not in mapping:
        raise ValidationError(f"{where}: '{key}' is missing")
    return mapping[key]


def validate_definition(definition: dict) -> None:
    for section in REQUIRED_SECTIONS:
        _require(definition, section, "protocol")
    for key in TRIAL_KEYS:
        _require(definition["trial"], key, "[trial]")
    kit_types = _require(definition["kits"], "types", "[kits]")
    arm_codes = set()
    for index, arm in enumerate(definition["arms"]):
        where = f"[[arms]] #{index + 1}"
        code = _require(arm, "code", where)
        if code in arm_codes:
            raise ValidationError(f"{where}: arm code {code} appears twice")
        arm_codes.add(code)
        contents = _require(arm, "kit_contents", where)
        if set(contents) != set(kit_types):
            raise ValidationError(f"{where}: kit_contents must name exactly the kit types {kit_types}")
        if not set(contents.values()) <= {"active", "placebo"}:
            raise ValidationError(f"{where}: kit contents are 'active' or 'placebo'")
    if len(arm_codes) < 2:
        raise ValidationError("[[arms]]: a randomized trial needs at least two arms")
    total_ratio = sum(arm.get("ratio", 1) for arm in definition["arms"])
    for block_size in _require(definition["randomization"], "block_sizes", "[randomization]"):
        if block_size <= 0 or block_size % total_ratio:
            raise ValidationError(
                f"[randomization]: block size {block_size} is not a multiple of the allocation ratio total {total_ratio}"
            )
    for index, site in enumerate(definition["sites"]):
        where = f"[[sites]] #{index + 1}"
        for key in ("code", "name", "time_zone"):
            _require(site, key, where)
        if site["time_zone"] not in available_timezones():
            raise ValidationError(f"{where}: unknown time zone {site['time_zone']}")
    codes = set()
    for index, criterion in enumerate(_require(definition["eligibility"], "criteria", "[eligibility]")):
        where = f"[[eligibility.criteria]] #{index + 1}"
        code = _require(criterion, "code", where)
        if code in codes:
            raise ValidationError(f"{where}: criterion code {code} appears twice")
        codes.add(code)
        if _require(criterion, "kind", where) not in ("inclusion", "exclusion"):
            raise ValidationError(f"{where}: kind is 'inclusion' or 'exclusion'")
        _require(criterion, "text", where)
    for key in ("minimum_age_years", "maximum_age_years"):
        _require(definition["eligibility"], key, "[eligibility]")
    if not isinstance(definition["randomization"].get("require_eligibility_signature", False), bool):
        raise ValidationError("[randomization]: require_eligibility_signature is true or false")
    for index, factor in enumerate(definition["randomization"].get("factors", [])):
        where = f"[[randomization.factors]] #{index + 1}"
        _require(factor, "code", where)
        if len(_require(factor, "levels", where)) < 2:
            raise ValidationError(f"{where}: a stratification factor needs at least two levels")


def read_definition(path: Path) -> dict:
    with open(path, "rb") as protocol_file:
        try:
            definition = tomllib.load(protocol_file)
        except tomllib.TOMLDecodeError as error:
            raise ValidationError(f"{path}: {error}") from None
    validate_definition(definition)
    return definition


def load_protocol(path: Path, *, actor=None) -> Trial:
    """Create or update the trial, its arms and its sites from the file at `path`.

    Arms of a trial that already has randomized participants are not touched by a reload: a
    changed arm definition needs a new protocol version, not an edit in place."""
    definition = read_definition(path)
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()
    trial_fields = {key: definition["trial"][key] for key in TRIAL_KEYS if key != "nct_id"}
    with audit_context(actor=actor, reason=f"Protocol loaded from {Path(path).name}"), transaction.atomic():
        trial, _ = Trial.objects.update_or_create(
            nct_id=definition["trial"]["nct_id"],
            defaults={**trial_fields, "definition": definition, "definition_sha256": digest},
        )
        for order, arm in enumerate(definition["arms"]):
            Arm.objects.update_or_create(
                trial=trial,
                code=arm["code"],
                defaults={
                    "name": arm["name"],
                    "ratio": arm.get("ratio", 1),
                    "kit_contents": arm["kit_contents"],
                    "order": order,
                },
            )
        for site in definition["sites"]:
            Site.objects.update_or_create(
                code=site["code"],
                defaults={"trial": trial, "name": site["name"], "time_zone": site["time_zone"]},
            )
    return trial
