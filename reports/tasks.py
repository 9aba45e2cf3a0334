"""Background exports: an id in, the service does the work (idempotent: it claims the row)."""

from celery import shared_task

from reports import services


@shared_task(acks_late=True)
def run_export(export_id: int) -> bool:
    return services.export_run(export_id=export_id)


@shared_task
def requeue_exports() -> list[int]:
    return services.exports_requeue()
