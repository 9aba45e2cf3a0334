"""Hospital record numbers stored before they were normalised (only trimmed: full-width digits,
zero-width spaces, lower case were kept) are rewritten as the duplicate check now compares them.

Initials and kit numbers need no such step: their old checks (ASCII letters; capitals, digits
and dashes) never let anything but the normalised form be stored.

A number whose normalised form another screening at the same site already holds is the same
patient screened twice: it is left as it was and named, for the data manager to resolve;
merging screenings is not a migration's decision."""

import sys

from django.db import migrations

from trialsite.text import identifier

REASON = "hospital record number normalised (NFKC, invisible characters removed, capitals)"


def normalise(apps, schema_editor):
    Screening = apps.get_model("enrollment", "Screening")
    rows = list(Screening.objects.order_by("pk").values_list("pk", "site_id", "hospital_record_number"))
    if not rows:
        return
    with schema_editor.connection.cursor() as cursor:
        # Read by the audit trigger: a record number is a clinical value, changed only with a reason.
        cursor.execute("SELECT set_config('trial.reason', %s, true)", [REASON])
    taken = {(site_id, number) for _pk, site_id, number in rows}
    duplicates = []
    for pk, site_id, number in rows:
        normal = identifier(number)
        if normal == number or not normal:
            continue
        if (site_id, normal) in taken:
            duplicates.append(pk)
            continue
        Screening.objects.filter(pk=pk).update(hospital_record_number=normal)
        taken.discard((site_id, number))
        taken.add((site_id, normal))
    if duplicates:
        sys.stdout.write(
            "\n  Screenings whose hospital record number is another screening's at the same site once "
            f"normalised (left unchanged, resolve by hand): {', '.join(map(str, duplicates))}\n"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("enrollment", "0001_initial"),
        ("trialsite", "0003_audit_insert_statement_trigger"),
    ]

    operations = [migrations.RunPython(normalise, migrations.RunPython.noop)]
