"""Periodic housekeeping of visits and kits. Thin and idempotent: each run calls the service,
which changes only what is still due, so a retry or a second worker changes nothing."""

from celery import shared_task

from dosing import services


@shared_task(autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def mark_missed_visits() -> int:
    return services.visits_mark_missed()


@shared_task(autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def expire_kits() -> int:
    return services.kits_expire()


@shared_task(autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def resupply_all_sites() -> int:
    """Every site's resupply, on a schedule rather than after each dosing: the timing of a
    shipment must not point at the participant dosed just before it."""
    return services.resupply_all_sites()
