"""System checks for settings that would be dangerous in production."""

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.security, deploy=True)
def production_settings(app_configs, **kwargs):
    problems = []
    if settings.EMAIL_BACKEND.endswith(("console.EmailBackend", "locmem.EmailBackend")):
        problems.append(
            checks.Warning(
                "E-mail goes to the console: reminders and unblinding notices would not reach anyone.",
                hint="Set EMAIL_BACKEND and the EMAIL_* variables.",
                id="trialsite.W001",
            )
        )
    if (
        not settings.DATABASES["default"].get("PASSWORD")
        and settings.DATABASES["default"].get("HOST") not in ("", None)
        and not str(settings.DATABASES["default"].get("HOST")).startswith("/")
    ):
        problems.append(
            checks.Warning(
                "The database is reached over TCP without a password.",
                hint="Use a DATABASE_URL with a password for a restricted role.",
                id="trialsite.W002",
            )
        )
    return problems
