from django.db import migrations

# 0003's guard ran a query for every slot inserted: a list of 100,000 slots per stratum paid
# 200,000 lookups. Checked once per statement against the inserted rows it refuses the same
# inserts (the whole statement fails, nothing is added) at the cost of one query.
GUARD_SQL = r"""
DROP TRIGGER IF EXISTS randomization_locked_list_insert_guard ON randomization_slot;

CREATE OR REPLACE FUNCTION randomization_locked_list_insert_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    locked_list bigint;
BEGIN
    SELECT l.id INTO locked_list
    FROM randomization_randomizationlist AS l
    WHERE l.locked_at IS NOT NULL AND l.id IN (SELECT DISTINCT randomization_list_id FROM added_slots)
    LIMIT 1;
    IF locked_list IS NOT NULL THEN
        RAISE EXCEPTION 'Randomization list % is locked: no slot can be added to it', locked_list
            USING ERRCODE = 'TR003';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER randomization_locked_list_insert_guard
    AFTER INSERT ON randomization_slot
    REFERENCING NEW TABLE AS added_slots
    FOR EACH STATEMENT EXECUTE FUNCTION randomization_locked_list_insert_guard();
"""

ROW_GUARD_SQL = r"""
DROP TRIGGER IF EXISTS randomization_locked_list_insert_guard ON randomization_slot;

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

CREATE TRIGGER randomization_locked_list_insert_guard
    BEFORE INSERT ON randomization_slot
    FOR EACH ROW EXECUTE FUNCTION randomization_locked_list_insert_guard();
"""


class Migration(migrations.Migration):
    dependencies = [("randomization", "0003_no_slots_added_to_a_locked_list")]

    operations = [migrations.RunSQL(GUARD_SQL, ROW_GUARD_SQL)]
