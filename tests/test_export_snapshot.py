"""An export reads one snapshot (review of issue 19): the datasets, tables and data version of
one export come from the same moment, whatever commits while it is being written."""

from __future__ import annotations

import pytest
from django.db import DEFAULT_DB_ALIAS, connection, connections

from reports import selectors, services
from trialsite.models import Site

pytestmark = pytest.mark.django_db(transaction=True)


def commit_elsewhere(sql: str, parameters: list) -> None:
    other = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with other.cursor() as cursor:
            cursor.execute(sql, parameters)
    finally:
        other.close()


def test_what_commits_during_the_snapshot_is_not_seen_by_it(trial):
    site = Site.objects.filter(trial=trial).order_by("id").first()
    with services.snapshot():
        version = selectors.data_version()
        before = Site.objects.get(pk=site.pk).name
        commit_elsewhere("UPDATE trialsite_site SET name = %s WHERE id = %s", ["Renamed meanwhile", site.pk])
        assert Site.objects.get(pk=site.pk).name == before
        assert selectors.data_version() == version
    # Outside the snapshot the change is there: the other connection did commit it.
    assert Site.objects.get(pk=site.pk).name == "Renamed meanwhile"


def test_inside_a_callers_transaction_the_snapshot_is_that_transaction(trial):
    from django.db import transaction

    with transaction.atomic():
        connection.cursor().execute("SELECT 1")
        with services.snapshot():
            assert connection.in_atomic_block
