from django.db import migrations

LOCK_SQL = r"""
CREATE OR REPLACE FUNCTION randomization_locked_slot_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    locked boolean;
BEGIN
    SELECT locked_at IS NOT NULL INTO locked FROM randomization_randomizationlist
    WHERE id = OLD.randomization_list_id;
    IF NOT locked THEN
        IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
        RETURN NEW;
    END IF;
    -- On a locked list the one change allowed is filling an empty slot, once.
    IF TG_OP = 'UPDATE'
       AND OLD.participant_id IS NULL AND NEW.participant_id IS NOT NULL
       AND NEW.allocated_at IS NOT NULL
       AND (to_jsonb(NEW) - 'participant_id' - 'allocated_at') = (to_jsonb(OLD) - 'participant_id' - 'allocated_at')
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'Slot % belongs to a locked randomization list and cannot change', OLD.id
        USING ERRCODE = 'TR003';
END;
$$;

CREATE OR REPLACE TRIGGER randomization_locked_slot_guard
    BEFORE UPDATE OR DELETE ON randomization_slot
    FOR EACH ROW EXECUTE FUNCTION randomization_locked_slot_guard();

CREATE OR REPLACE FUNCTION randomization_locked_list_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.locked_at IS NULL THEN
        IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE'
       AND (to_jsonb(NEW) - 'is_active') = (to_jsonb(OLD) - 'is_active') THEN
        RETURN NEW;  -- a newer version may retire it; nothing else changes
    END IF;
    RAISE EXCEPTION 'Randomization list % is locked and cannot change', OLD.id USING ERRCODE = 'TR003';
END;
$$;

CREATE OR REPLACE TRIGGER randomization_locked_list_guard
    BEFORE UPDATE OR DELETE ON randomization_randomizationlist
    FOR EACH ROW EXECUTE FUNCTION randomization_locked_list_guard();

"""

UNLOCK_SQL = """
DROP TRIGGER IF EXISTS randomization_locked_slot_guard ON randomization_slot;
DROP TRIGGER IF EXISTS randomization_locked_list_guard ON randomization_randomizationlist;
DROP FUNCTION IF EXISTS randomization_locked_slot_guard();
DROP FUNCTION IF EXISTS randomization_locked_list_guard();
"""


class Migration(migrations.Migration):
    dependencies = [("randomization", "0001_initial")]

    operations = [migrations.RunSQL(LOCK_SQL, UNLOCK_SQL)]
