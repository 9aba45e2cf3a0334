from django.db import migrations

from trialsite.audit import AUDIT_INSERT_FUNCTION_REVERSE_SQL, AUDIT_INSERT_FUNCTION_SQL


class Migration(migrations.Migration):
    dependencies = [("trialsite", "0002_audit_triggers")]

    # The per-table statement triggers that call this are installed after migrate, with the
    # row triggers (trialsite.audit.install_triggers).
    operations = [migrations.RunSQL(AUDIT_INSERT_FUNCTION_SQL, AUDIT_INSERT_FUNCTION_REVERSE_SQL)]
