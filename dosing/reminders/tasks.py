"""Thin tasks: an id in, the service does the work. Safe to run twice."""

import smtplib

from celery import shared_task

from dosing.reminders import services


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(smtplib.SMTPException, OSError, ConnectionError),
    retry_backoff=30,
    retry_backoff_max=30 * 60,
    max_retries=8,
)
def send_reminder(reminder_id: int) -> str:
    return services.reminder_send(reminder_id=reminder_id).outcome


@shared_task
def dispatch_due_reminders() -> int:
    return services.reminders_dispatch()
