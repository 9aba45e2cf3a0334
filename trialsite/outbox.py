"""The e-mail outboxes (visit reminders, SAE notices): rows written with the trial data, handed
to the broker when due and claimed by one conditional UPDATE before a worker sends them, so each
message goes once even when a message is lost or a worker dies mid-send.

A table used here has `due_at`, `status` ('scheduled', 'sending', …), `enqueued_at`,
`claimed_at` and `attempts`."""

from __future__ import annotations

import datetime

from django.conf import settings
from django.db import connection
from django.db.models import Q


def claim_lease() -> datetime.timedelta:
    """How long a worker's claim holds before another may take the row over (it died)."""
    return datetime.timedelta(seconds=settings.REMINDER_CLAIM_LEASE_SECONDS)


def requeue_after() -> datetime.timedelta:
    """How long a row handed to the broker may wait unclaimed before it is handed over again."""
    return datetime.timedelta(seconds=settings.REMINDER_REQUEUE_SECONDS)


def handable(*, now: datetime.datetime) -> Q:
    """Due rows to hand to the broker: never handed over, handed over long ago and still not
    claimed, or claimed by a worker that has since died."""
    return Q(due_at__lte=now) & (
        Q(status="scheduled", enqueued_at__isnull=True)
        | Q(status="scheduled", enqueued_at__lt=now - requeue_after())
        | Q(status="sending", claimed_at__lt=now - claim_lease())
    )


def claim(table: str, row_id: int, *, now: datetime.datetime) -> bool:
    """Take the row for sending; False when another worker holds a live claim or it is done."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET status = 'sending', claimed_at = %s, attempts = attempts + 1 "
            "WHERE id = %s AND (status = 'scheduled' OR (status = 'sending' AND claimed_at < %s)) RETURNING id",
            [now, row_id, now - claim_lease()],
        )
        return cursor.fetchone() is not None
