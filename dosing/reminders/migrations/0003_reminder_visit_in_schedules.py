"""Visits moved to the schedules app (schedules 0001): the foreign key points at the same table,
so only Django's state changes."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("reminders", "0002_reminder_site_due_index"),
        ("schedules", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.AlterField(
                    model_name="reminder",
                    name="visit",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="reminders", to="schedules.visit"
                    ),
                ),
            ],
        ),
    ]
