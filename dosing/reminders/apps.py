from django.apps import AppConfig


class RemindersConfig(AppConfig):
    """Visit reminders: part of dosing (they follow the visit schedule), with their own tables
    and migrations so the outbox can evolve apart from visits and kits."""

    name = "dosing.reminders"
    label = "reminders"
    verbose_name = "Visit reminders"
