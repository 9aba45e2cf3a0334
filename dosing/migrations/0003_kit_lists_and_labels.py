import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("dosing", "0002_shipment_doserecord_kit"),
        ("trialsite", "0003_audit_insert_statement_trigger"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="KitList",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "source",
                    models.CharField(
                        choices=[("generated", "Generated in the application"), ("imported", "Imported from CSV")],
                        max_length=10,
                    ),
                ),
                ("seed", models.CharField(blank=True, max_length=200)),
                ("kit_count", models.PositiveIntegerField()),
                ("sha256", models.CharField(max_length=64)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "created_by",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="+", to=settings.AUTH_USER_MODEL
                    ),
                ),
                (
                    "trial",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="kit_lists", to="trialsite.trial"
                    ),
                ),
            ],
            options={"ordering": ["-created_at", "-id"]},
        ),
        migrations.AlterField(
            model_name="shipment",
            name="shipped_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="kit",
            name="lot",
            field=models.CharField(max_length=40, verbose_name="manufacturing lot"),
        ),
        migrations.AddField(
            model_name="kit",
            name="packaging_lot",
            field=models.CharField(default="", max_length=40, verbose_name="packaging lot"),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="kit",
            name="label_expiry",
            field=models.DateField(null=True, verbose_name="label expiry"),
        ),
        # Kits imported before packaging lots existed: each manufacturing lot becomes its own
        # packaging lot and the label shows the true expiry (what the label said then).
        migrations.RunSQL(
            "UPDATE dosing_kit SET packaging_lot = lot, label_expiry = expiry",
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.AlterField(
            model_name="kit",
            name="label_expiry",
            field=models.DateField(verbose_name="label expiry"),
        ),
        migrations.AddField(
            model_name="kit",
            name="kit_list",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="kits",
                to="dosing.kitlist",
            ),
        ),
        migrations.RemoveIndex(model_name="kit", name="kit_available_by_expiry"),
        migrations.AddIndex(
            model_name="kit",
            index=models.Index(
                fields=["site", "status", "kit_type", "label_expiry"], name="kit_available_by_label_expiry"
            ),
        ),
    ]
