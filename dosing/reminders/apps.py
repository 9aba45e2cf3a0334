from django.apps import AppConfig


class RemindersConfig(AppConfig):
    """Visit reminders: part of dosing (they follow the visit schedule), with their own tables
    and migrations so the outbox can evolve apart from visits and kits."""

    name = "dosing.reminders"
    label = "reminders"
    verbose_name = "Visit reminders"

    def ready(self):
        # New visits (the plan at randomization, an unscheduled visit) get their reminders in the
        # transaction that creates them; the schedules app does not import dosing.
        from schedules.signals import visits_created

        visits_created.connect(_plan_reminders, dispatch_uid="reminders-for-new-visits")


def _plan_reminders(sender, *, visits, participant, **kwargs):
    from dosing.reminders.services import reminders_plan

    reminders_plan(visits=visits, participant=participant)
