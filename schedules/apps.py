from django.apps import AppConfig


class SchedulesConfig(AppConfig):
    """Visit schedules: each participant's visits, planned from the protocol's `[schedule]`.
    Randomization creates the plan and dosing records what happened at it; neither imports the
    other, both import this app."""

    name = "schedules"
    verbose_name = "Visit schedules"
