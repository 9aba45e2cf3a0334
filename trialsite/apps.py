from django.apps import AppConfig
from django.db.models.signals import post_migrate


class TrialsiteConfig(AppConfig):
    name = "trialsite"
    verbose_name = "Trial, sites and staff"

    def ready(self) -> None:
        from trialsite import audit, checks, dbroles  # noqa: F401  (registers the system checks)

        # Once per migrate run, after every app's tables exist; as the owner, who then grants
        # the application's role its rows.
        post_migrate.connect(audit.install_triggers, sender=self, dispatch_uid="trial_audit_triggers")
        post_migrate.connect(audit.grant_privileges, sender=self, dispatch_uid="trial_audit_grants")

        from django.contrib.auth.signals import user_logged_in

        from trialsite import two_factor

        # Whether the user has an authenticator is looked up once per login, not per request.
        user_logged_in.connect(two_factor.on_login, dispatch_uid="two_factor_on_login")

        from trialsite import reauth

        # Logging in with the password is a right password: wrong re-entries start again from none.
        user_logged_in.connect(
            lambda sender, user, **kwargs: reauth.throttle_clear(user), dispatch_uid="reauth_clear_on_login", weak=False
        )
