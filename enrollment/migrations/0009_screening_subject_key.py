"""Every screening gets its permanent subject key (issue 19). Existing screenings are numbered per
site in the order they were created, as new ones will be, so the keys given now are the ones a
screening recorded today would have had."""

from django.db import migrations, models

DIGITS = 5


def backfill(apps, schema_editor):
    Screening = apps.get_model("enrollment", "Screening")
    numbers: dict[int, int] = {}
    rows = Screening.objects.order_by("created_at", "pk").values_list("pk", "site_id", "site__code")
    for pk, site_id, code in rows.iterator(chunk_size=2000):
        numbers[site_id] = numbers.get(site_id, 0) + 1
        Screening.objects.filter(pk=pk).update(subject_key=f"{code}-P{numbers[site_id]:0{DIGITS}d}")


class Migration(migrations.Migration):
    dependencies = [
        ("enrollment", "0008_participant_status_died"),
    ]

    operations = [
        migrations.AddField(
            model_name="screening",
            name="subject_key",
            field=models.CharField(editable=False, max_length=30, null=True, verbose_name="subject key"),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="screening",
            name="subject_key",
            field=models.CharField(editable=False, max_length=30, verbose_name="subject key"),
        ),
        migrations.AddConstraint(
            model_name="screening",
            constraint=models.UniqueConstraint(
                fields=("site", "subject_key"), name="screening_subject_key_unique_per_site"
            ),
        ),
    ]
