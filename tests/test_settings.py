"""Production settings: refused without a real secret key, clean under `check --deploy`."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "ALLOWED_HOSTS": "trial.example.org",
    "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
    "DATABASE_URL": "postgres://trialsite:s3cret@db.internal:5432/trialsite",
}


def manage(*arguments, **env):
    unset = ("SECRET_KEY", "DJANGO_DEBUG", "DJANGO_ALLOW_ASYNC_UNSAFE")
    environment = {key: value for key, value in os.environ.items() if key not in unset}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *arguments], cwd=ROOT, env=environment, capture_output=True, text=True
    )


def test_production_refuses_to_start_with_the_development_secret_key():
    result = manage("check", **PRODUCTION)
    assert result.returncode != 0
    assert "refuses to start without a real SECRET_KEY" in result.stderr


def test_production_refuses_a_short_secret_key():
    result = manage("check", SECRET_KEY="too-short", **PRODUCTION)
    assert result.returncode != 0


def test_check_deploy_is_clean_with_production_settings(django_db_setup):
    from tests.dbsetup import database_url

    # The real test database as the application's restricted role: check --deploy asks it.
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        SECRET_KEY="k" * 20 + "x9!Q" * 10,
        **{**PRODUCTION, "DATABASE_URL": database_url()},
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "System check identified no issues" in result.stdout


def test_check_deploy_warns_when_mail_would_go_nowhere():
    result = manage(
        "check",
        "--deploy",
        SECRET_KEY="k" * 20 + "x9!Q" * 10,
        **{**PRODUCTION, "EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"},
    )
    assert "trialsite.W001" in result.stdout + result.stderr
