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
def resupply_site(site_id: int) -> bool:
    """After a kit left a site's stock: ship what the site needs, if anything. The site row is
    locked by the service, so a second worker or a retry ships nothing twice."""
    from trialsite.models import Site

    site = Site.objects.filter(pk=site_id).select_related("trial").first()
    if site is None:
        return False
    return services.resupply_site(site=site) is not None


@shared_task(autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def resupply_all_sites() -> int:
    return services.resupply_all_sites()
