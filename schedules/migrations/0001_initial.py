"""Visits move from dosing to this app without touching the database: the table keeps its name
(`dosing_visit`), its rows, constraints, audit triggers and audit events. Only Django's state
changes here (and in dosing 0007 / reminders 0003, which point their foreign keys at it); the
content type is renamed so that anything keyed on it follows the model."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def content_type_follows_the_model(apps, schema_editor):
    content_types = apps.get_model("contenttypes", "ContentType")
    if not content_types.objects.filter(app_label="schedules", model="visit").exists():
        content_types.objects.filter(app_label="dosing", model="visit").update(app_label="schedules")


def content_type_goes_back(apps, schema_editor):
    content_types = apps.get_model("contenttypes", "ContentType")
    if not content_types.objects.filter(app_label="dosing", model="visit").exists():
        content_types.objects.filter(app_label="schedules", model="visit").update(app_label="dosing")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        # The table was created (and last changed) by dosing's migrations.
        ("dosing", "0006_repeat_labs"),
        ("enrollment", "0004_protocol_deviation_details"),
        ("trialsite", "0006_audit_security_events"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="Visit",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("sequence", models.PositiveSmallIntegerField()),
                        ("code", models.CharField(max_length=10, verbose_name="visit")),
                        (
                            "kind",
                            models.CharField(
                                choices=[
                                    ("dosing", "Dosing"),
                                    ("end_of_treatment", "End of treatment"),
                                    ("follow_up", "Follow-up"),
                                    ("cycle", "Treatment cycle"),
                                    ("assessment", "Assessment"),
                                    ("unscheduled", "Unscheduled"),
                                ],
                                max_length=20,
                            ),
                        ),
                        ("cycle", models.PositiveSmallIntegerField(blank=True, null=True)),
                        ("target_date", models.DateField(verbose_name="target date")),
                        ("window_start", models.DateField(verbose_name="window opens")),
                        ("window_end", models.DateField(verbose_name="window closes")),
                        (
                            "status",
                            models.CharField(
                                choices=[
                                    ("scheduled", "Scheduled"),
                                    ("completed", "Completed"),
                                    ("missed", "Missed"),
                                    ("cancelled", "Not done (treatment stopped)"),
                                    ("not_done_withdrawn", "Not done (withdrawn)"),
                                ],
                                default="scheduled",
                                max_length=20,
                            ),
                        ),
                        ("actual_date", models.DateField(blank=True, null=True, verbose_name="visit date")),
                        (
                            "out_of_window_reason",
                            models.TextField(blank=True, verbose_name="reason for a visit outside the window"),
                        ),
                        ("is_deviation", models.BooleanField(default=False, verbose_name="protocol deviation")),
                        (
                            "weight_kg",
                            models.DecimalField(
                                blank=True, decimal_places=1, max_digits=5, null=True, verbose_name="body weight (kg)"
                            ),
                        ),
                        ("recorded_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "participant",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="visits",
                                to="enrollment.participant",
                            ),
                        ),
                        (
                            "recorded_by",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "site",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT, related_name="+", to="trialsite.site"
                            ),
                        ),
                    ],
                    options={
                        "db_table": "dosing_visit",
                        "ordering": ["participant", "sequence"],
                        "indexes": [models.Index(fields=["status", "window_end"], name="visit_open_by_window_end")],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("participant", "code"), name="visit_code_unique_per_participant"
                            ),
                            models.UniqueConstraint(
                                fields=("participant", "sequence"), name="visit_sequence_unique_per_participant"
                            ),
                            models.CheckConstraint(
                                condition=models.Q(
                                    ("window_start__lte", models.F("target_date")),
                                    ("target_date__lte", models.F("window_end")),
                                ),
                                name="visit_target_inside_window",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(
                                    (
                                        "status__in",
                                        ["scheduled", "completed", "missed", "cancelled", "not_done_withdrawn"],
                                    )
                                ),
                                name="visit_status_valid",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(
                                    models.Q(("status", "completed"), _negated=True),
                                    ("actual_date__isnull", False),
                                    _connector="OR",
                                ),
                                name="completed_visit_has_date",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(("weight_kg__isnull", True), ("weight_kg__gt", 0), _connector="OR"),
                                name="visit_weight_positive",
                            ),
                        ],
                    },
                ),
            ],
        ),
        migrations.RunPython(content_type_follows_the_model, content_type_goes_back),
    ]
