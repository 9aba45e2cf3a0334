"""Visits moved to the schedules app (schedules 0001) with their table `dosing_visit`: the
foreign keys of doses, repeat labs and kits point at the same table and Visit leaves dosing's
state. Nothing changes in the database (its rows, triggers and audit events stay)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("dosing", "0006_repeat_labs"),
        ("schedules", "0001_initial"),
        # Every foreign key to dosing.Visit points elsewhere before it leaves the state.
        ("reminders", "0003_reminder_visit_in_schedules"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.AlterField(
                    model_name="doserecord",
                    name="visit",
                    field=models.OneToOneField(
                        on_delete=django.db.models.deletion.PROTECT, related_name="dose", to="schedules.visit"
                    ),
                ),
                migrations.AlterField(
                    model_name="repeatlabs",
                    name="visit",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="repeat_labs", to="schedules.visit"
                    ),
                ),
                migrations.AlterField(
                    model_name="kit",
                    name="visit",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="kits",
                        to="schedules.visit",
                    ),
                ),
                migrations.DeleteModel(name="Visit"),
            ],
        ),
    ]
