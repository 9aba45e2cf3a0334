import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    # Apart from 0008: PostgreSQL will not alter a table with row updates pending in the same
    # transaction, and 0008 fills in every kit's trial.
    dependencies = [("dosing", "0008_kits_belong_to_a_trial")]

    operations = [
        migrations.AlterField(
            model_name="kit",
            name="trial",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT, related_name="kits", to="trialsite.trial"
            ),
        ),
        migrations.AddConstraint(
            model_name="kit",
            constraint=models.UniqueConstraint(fields=("trial", "kit_number"), name="kit_number_unique_per_trial"),
        ),
    ]
