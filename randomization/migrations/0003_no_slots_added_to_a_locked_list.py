from django.db import migrations

# 0002 refuses changes to a locked list's slots; this closes the other door: adding slots to a
# locked list, which would let someone append allocations after the list's hash was fixed.
GUARD_SQL = r"""
CREATE OR REPLACE FUNCTION randomization_locked_list_insert_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM randomization_randomizationlist
        WHERE id = NEW.randomization_list_id AND locked_at IS NOT NULL
    ) THEN
        RAISE EXCEPTION 'Randomization list % is locked: no slot can be added to it', NEW.randomization_list_id
            USING ERRCODE = 'TR003';
    END IF;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE TRIGGER randomization_locked_list_insert_guard
    BEFORE INSERT ON randomization_slot
    FOR EACH ROW EXECUTE FUNCTION randomization_locked_list_insert_guard();
"""

DROP_SQL = """
DROP TRIGGER IF EXISTS randomization_locked_list_insert_guard ON randomization_slot;
DROP FUNCTION IF EXISTS randomization_locked_list_insert_guard();
"""


class Migration(migrations.Migration):
    dependencies = [("randomization", "0002_locked_lists_are_immutable")]

    operations = [migrations.RunSQL(GUARD_SQL, DROP_SQL)]
