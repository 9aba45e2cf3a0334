from django.db import migrations

from trialsite.audit import AUDIT_FUNCTION_REVERSE_SQL, AUDIT_FUNCTION_SQL


class Migration(migrations.Migration):
    dependencies = [("trialsite", "0001_initial")]

    # The per-table triggers are (re)installed after every migrate from the models'
    # declarations (trialsite.audit.install_triggers); this creates what they call.
    operations = [migrations.RunSQL(AUDIT_FUNCTION_SQL, AUDIT_FUNCTION_REVERSE_SQL)]
