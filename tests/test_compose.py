"""docker-compose.yml cannot be run here (no Docker engine), so check what can be checked:
each service's command names modules and management commands that exist."""

import importlib
from pathlib import Path

import yaml
from django.core.management import get_commands

ROOT = Path(__file__).resolve().parent.parent


def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_migrate_web_worker_beat_postgres_and_redis():
    assert set(compose()["services"]) == {"migrate", "web", "worker", "beat", "postgres", "redis"}


def test_each_service_command_names_modules_that_exist():
    services = compose()["services"]
    web = " ".join(services["web"]["command"])
    assert "gunicorn trialsite.wsgi:application" in web
    module, attribute = "trialsite.wsgi:application".split(":")
    assert hasattr(importlib.import_module(module), attribute)
    assert "manage.py load_protocol" in web and "load_protocol" in get_commands()
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--no-input"]
    for name in ("worker", "beat"):
        command = services[name]["command"]
        assert command[:3] == ["celery", "-A", "trialsite"]
        assert command[3] == name
    assert importlib.import_module("trialsite").celery_app.main == "trialsite"


def test_the_app_services_use_the_same_settings_variables_as_make_run():
    environment = compose()["services"]["web"]["environment"]
    for variable in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DJANGO_DEBUG", "ALLOWED_HOSTS"):
        assert variable in environment


def test_only_migrate_has_the_owners_credentials_and_the_rest_run_as_the_application_role():
    services = compose()["services"]
    assert "trialsite_owner" in services["migrate"]["environment"]["DATABASE_OWNER_URL"]
    for name in ("web", "worker", "beat"):
        environment = services[name]["environment"]
        assert "DATABASE_OWNER_URL" not in environment
        assert environment["DATABASE_URL"].startswith("postgres://trialsite_app:")
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    init = (ROOT / "docker" / "postgres-init" / "10-roles.sh").read_text()
    assert "./docker/postgres-init:/docker-entrypoint-initdb.d:ro" in services["postgres"]["volumes"]
    assert "CREATE ROLE trialsite_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE" in init
