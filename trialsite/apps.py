from django.apps import AppConfig
from django.db.models.signals import post_migrate


class TrialsiteConfig(AppConfig):
    name = "trialsite"
    verbose_name = "Trial, sites and staff"

    def ready(self) -> None:
        from trialsite import audit, checks  # noqa: F401  (registers the system checks)

        # Once per migrate run, after every app's tables exist.
        post_migrate.connect(audit.install_triggers, sender=self, dispatch_uid="trial_audit_triggers")
