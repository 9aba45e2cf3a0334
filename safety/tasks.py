"""Thin tasks: an id in, the service does the work. Safe to run twice."""

import smtplib

from celery import shared_task

from safety import services


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(smtplib.SMTPException, OSError, ConnectionError),
    retry_backoff=30,
    retry_backoff_max=30 * 60,
    max_retries=8,
)
def send_sae_notice(notice_id: int) -> str:
    return services.sae_notice_send(notice_id=notice_id)


@shared_task
def dispatch_sae_notices() -> int:
    return services.sae_notices_dispatch()
