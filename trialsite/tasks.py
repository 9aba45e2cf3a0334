"""Beat tasks of the audit chain (trialsite/audit.py): both are idempotent."""

from celery import shared_task

from trialsite import audit


@shared_task(acks_late=True)
def extend_audit_chain() -> int:
    return audit.chain_extend()


@shared_task(acks_late=True)
def seal_audit_chain() -> dict:
    return audit.seal(occasion="daily")
