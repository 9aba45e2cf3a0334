"""The participant's allocated arm, for the system's own use (choosing kit contents; never to be
shown to a user), read without importing the app that allocates: randomization registers its
reader when it starts (RandomizationConfig.ready), so dosing and randomization, which both use the
schedules app, do not import each other."""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import ImproperlyConfigured

_reader: Callable | None = None


def register(reader: Callable) -> None:
    global _reader
    _reader = reader


def allocated_arm(participant):
    """The participant's arm, or None before randomization."""
    if _reader is None:
        raise ImproperlyConfigured("No allocation reader is registered: is the randomization app installed?")
    return _reader(participant)
