from django.apps import AppConfig


class RemindersConfig(AppConfig):
    """Visit reminders: part of dosing (they follow the visit schedule), with their own tables
    and migrations so the outbox can evolve apart from visits and kits."""

    name = "dosing.reminders"
    label = "reminders"
    verbose_name = "Visit reminders"

    def ready(self):
        # New visits get their reminders in the transaction that creates them (an unscheduled
        # visit, a plan made on its own), or, for the plan made at randomization, after commit:
        # `reminders_plan_pending`, the dispatcher's first step every minute, plans them as of
        # the randomization time. The schedules app does not import dosing.
        from schedules.signals import visits_created

        visits_created.connect(_plan_reminders, dispatch_uid="reminders-for-new-visits")


def _plan_reminders(sender, *, visits, participant, reminders_after_commit=False, **kwargs):
    if reminders_after_commit:
        return
    from dosing.reminders.services import reminders_plan

    reminders_plan(visits=visits, participant=participant)
