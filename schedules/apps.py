from django.apps import AppConfig


class SchedulesConfig(AppConfig):
    """Visit schedules: each participant's visits, planned from the protocol's `[schedule]`.
    Randomization creates the plan and dosing records what happened at it; both import this app,
    which imports neither. Randomization never imports dosing; dosing reads the allocated arm
    (randomization.selectors.allocated_arm, to choose kit contents) and the keyed random stream
    of the kit list (randomization.generator), so the dependency runs one way, without a cycle."""

    name = "schedules"
    verbose_name = "Visit schedules"
