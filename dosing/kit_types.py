"""What a kit type is, from the protocol: the infusion's kit type or the tablets' (the protocol's
[dosing.infusion] and [dosing.tablet] name theirs). Nothing here names a type: another trial
calls its kits something else."""

from __future__ import annotations

from django.utils.translation import gettext as _


def infusion_kit_type(trial) -> str | None:
    infusion = trial.protocol.dosing.infusion
    return infusion.kit_type if infusion else None


def tablet_kit_type(trial) -> str | None:
    tablet = trial.protocol.dosing.tablet
    return tablet.kit_type if tablet else None


def is_tablet_kit(trial, kit_type: str) -> bool:
    return kit_type == tablet_kit_type(trial)


def is_infusion_kit(trial, kit_type: str) -> bool:
    return kit_type == infusion_kit_type(trial)


def kit_type_label(trial, kit_type: str) -> str:
    """In the reader's language, by what the kit carries."""
    if is_infusion_kit(trial, kit_type):
        return _("Infusion")
    if is_tablet_kit(trial, kit_type):
        return _("Tablets")
    return kit_type


def kit_types_given(trial, *, infusion_held: bool) -> list[str]:
    """The kit types a dosing visit gives: all of the trial's, or without the infusion's when it
    is held (the daily tablets continue)."""
    held = infusion_kit_type(trial) if infusion_held else None
    return [kit_type for kit_type in trial.protocol.kit_types if kit_type != held]
