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


@checks.register()
def audit_blinded_visible_declarations(app_configs, **kwargs):
    """Every audited model says which of its columns a blinded reader of the audit trail may
    see; a name that is not one of its fields stops startup, since it would hide or show the
    wrong column without a word."""
    from django.core.exceptions import ImproperlyConfigured

    from trialsite.audit import audited_models, blinded_visible_columns

    problems = []
    for model in audited_models():
        try:
            blinded_visible_columns(model)
        except ImproperlyConfigured as error:
            problems.append(checks.Error(str(error), obj=model, id="trialsite.E010"))
            continue
        if getattr(model, "audit_blinded_visible", None) is None:
            problems.append(
                checks.Warning(
                    f"{model._meta.label} declares no audit_blinded_visible: blinded readers of the "
                    "audit trail see nothing of its rows but the id.",
                    hint="List the fields a blinded user may see, leaving out anything that could group rows by arm.",
                    obj=model,
                    id="trialsite.W010",
                )
            )
    return problems
