"""A form record points at the loaded protocol version it was first saved under
(`trialsite.ProtocolVersion`), like every other record of captured data, instead of holding the
version's number as text.

The text is replaced rather than kept beside the key: two columns saying the same thing could
come to disagree. Each record's text is matched to the version of that number loaded for the
record's trial (every trial has its loaded version since trialsite 0007, and a form took the
number of the version in force). A number matching no loaded version is named on the console and
left without a version; the number stays in the record's audit trail (its insert event)."""

import sys

import django.db.models.deletion
from django.db import migrations, models

REASON = "form record points at the loaded protocol version it was saved under"


def _set_reason(cursor):
    # Read by the audit trigger: the update is recorded with why it was made.
    cursor.execute("SELECT set_config('trial.reason', %s, true)", [REASON])


def _check_keys_now(cursor):
    # The keys' checks are deferred to the commit; PostgreSQL refuses to alter a table with checks
    # pending, and a column of this table is dropped (or renamed back) next in this transaction.
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    cursor.execute("SET CONSTRAINTS ALL DEFERRED")


def number_to_version(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        _set_reason(cursor)
        cursor.execute(
            """
            UPDATE crf_formrecord AS r SET protocol_version_id = v.id
            FROM trialsite_site AS s, trialsite_protocolversion AS v
            WHERE s.id = r.site_id AND v.trial_id = s.trial_id AND v.version = r.protocol_version_number
            """
        )
        _check_keys_now(cursor)
        cursor.execute(
            "SELECT id, protocol_version_number FROM crf_formrecord "
            "WHERE protocol_version_id IS NULL AND protocol_version_number <> '' ORDER BY id"
        )
        unmatched = cursor.fetchall()
    if unmatched:
        sys.stdout.write(
            "\n  Form records whose protocol version matches no loaded version of their trial (left without "
            f"one; the number stays in their audit trail): {', '.join(f'{pk} (v{number})' for pk, number in unmatched)}\n"
        )


def version_to_number(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        _set_reason(cursor)
        cursor.execute(
            """
            UPDATE crf_formrecord AS r SET protocol_version_number = v.version
            FROM trialsite_protocolversion AS v WHERE v.id = r.protocol_version_id
            """
        )
        _check_keys_now(cursor)


class Migration(migrations.Migration):
    dependencies = [
        ("crf", "0001_initial"),
        ("trialsite", "0007_protocol_versions_and_site_codes_per_trial"),
    ]

    operations = [
        migrations.RenameField(
            model_name="formrecord", old_name="protocol_version", new_name="protocol_version_number"
        ),
        migrations.AddField(
            model_name="formrecord",
            name="protocol_version",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="trialsite.protocolversion",
                verbose_name="protocol version",
            ),
        ),
        migrations.RunPython(number_to_version, version_to_number),
        migrations.RemoveField(model_name="formrecord", name="protocol_version_number"),
    ]
