import os
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.utils import translation
from rest_framework.test import APIClient

from tests import factories
from trialsite.models import Role, Site
from trialsite.protocol import load_protocol

# `make test` hands whole files to its pytest-xdist processes as each frees up (--dist loadfile
# --no-loadscope-reorder). These files take from half a minute to a few minutes each (measured
# with --durations): handed out first, they run while the short files fill the other processes,
# instead of one of them starting last and keeping the whole run waiting for it (test_api_fuzz.py
# did: four minutes alone at the end). Longest first; files not named here keep their order.
LONGEST_FILES = (
    "test_insider.py",
    "test_dosing_api_fuzz.py",
    "test_api_fuzz.py",
    "test_role_days_browser.py",
    "test_blinding_leak.py",
    "test_layout_browser.py",
    "test_bad_input.py",
    "test_backup.py",
    "test_fault_drills.py",
    "test_randomization_allocation.py",
    "test_reminders_worker.py",
)


def pytest_collection_modifyitems(config, items):
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    first = {name: rank for rank, name in enumerate(LONGEST_FILES)}
    # A stable sort: every process collects the same order, and files keep theirs within a rank.
    items.sort(key=lambda item: first.get(item.path.name, len(first)))


@pytest.fixture(scope="session")
def django_db_setup(
    request, django_test_environment, django_db_blocker, django_db_modify_db_settings, tmp_path_factory
):
    """Created by the superuser, migrated by the owner, used as the restricted application role
    (tests/dbsetup.py); falls back to pytest-django's own setup when DATABASE_URL is no superuser."""
    from django.test.utils import setup_databases, teardown_databases

    from tests import dbsetup

    # Seals of test databases never land in the developer's var/audit-seals.jsonl; workers the
    # tests start inherit this.
    os.environ["AUDIT_SEAL_FILE"] = str(tmp_path_factory.mktemp("seals") / "audit-seals.jsonl")
    settings.AUDIT_SEAL_FILE = Path(os.environ["AUDIT_SEAL_FILE"])
    with django_db_blocker.unblock():
        plan = dbsetup.setup(verbosity=request.config.option.verbose)
        ordinary = None if plan else setup_databases(verbosity=request.config.option.verbose, interactive=False)
    yield
    with django_db_blocker.unblock():
        dbsetup.teardown() if plan else teardown_databases(ordinary, verbosity=request.config.option.verbose)


@pytest.fixture
def superuser_sql():
    """Run SQL on the test database as the superuser, behind the application's back."""
    import psycopg

    from tests import dbsetup

    if dbsetup.plan.superuser is None:
        pytest.skip("needs DATABASE_URL to be a superuser")

    def run(statement: str, parameters=None):
        with psycopg.connect(**dbsetup.plan.superuser) as connection:
            cursor = connection.execute(statement, parameters)
            return cursor.fetchall() if cursor.description else None

    return run


@pytest.fixture(autouse=True)
def _own_audit_seal_file(settings, tmp_path, monkeypatch):
    # Tables are emptied between tests, the audit chain with them: a seal belongs to one test
    # (and to the workers it starts, which inherit the environment).
    settings.AUDIT_SEAL_FILE = tmp_path / "audit-seals.jsonl"
    monkeypatch.setenv("AUDIT_SEAL_FILE", str(settings.AUDIT_SEAL_FILE))


@pytest.fixture(autouse=True)
def _default_language_after_each_test():
    # The test client runs LocaleMiddleware in this thread and nothing switches the language
    # back: after a zh-hans request a later test's messages would come out in Chinese.
    yield
    translation.deactivate()


@pytest.fixture(autouse=True)
def _fast_passwords_and_local_mail(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture
def trial(db):
    return load_protocol(settings.PROTOCOL_FILE)


@pytest.fixture
def site(trial) -> Site:
    return trial.sites.get(code="NT")


@pytest.fixture
def other_site(trial) -> Site:
    return factories.make_site(trial, "SH")


class Cast(dict):
    """One user per role at the Nantong site, plus a coordinator and a monitor elsewhere."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@pytest.fixture
def cast(site, other_site) -> Cast:
    people = Cast({role.value: factories.make_user(role.value, site, username=role.value) for role in Role})
    people["other_coordinator"] = factories.make_user(Role.COORDINATOR, other_site, username="other_coordinator")
    people["other_monitor"] = factories.make_user(Role.MONITOR, other_site, username="other_monitor")
    people["nobody"] = factories.make_user(None, None, username="nobody")
    return people


@pytest.fixture
def client_for():
    def logged_in(user) -> Client:
        client = Client()
        client.force_login(user)
        return client

    return logged_in


@pytest.fixture
def api_for():
    def logged_in(user) -> APIClient:
        client = APIClient()
        client.force_login(user)
        return client

    return logged_in


@pytest.fixture
def world(trial, site, cast):
    """One record of every kind a route names, for the sweeps over every route (tests/sweep.py)."""
    from tests.sweep import make_world

    return make_world(trial, site, cast)
