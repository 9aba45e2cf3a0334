from django.apps import AppConfig


class SchedulesConfig(AppConfig):
    """Visit schedules: each participant's visits, planned from the protocol's `[schedule]`.
    Randomization creates the plan and dosing records what happened at it; both import this app,
    which imports neither, and neither imports the other (tests/test_app_imports.py): dosing reads
    the allocated arm through trialsite.allocation and draws kit lists from trialsite.keyed_stream."""

    name = "schedules"
    verbose_name = "Visit schedules"
