from django.db import migrations, models

# A minimization list is locked with no slots: each allocation inserts its slot, already
# filled. The insert guard (0004) let no slot into a locked list; it now lets in exactly that,
# and only for a minimization list: a filled slot (participant and time). An empty slot, or any
# slot for a permuted-blocks list, is still refused once the list is locked.
GUARD_SQL = r"""
CREATE OR REPLACE FUNCTION randomization_locked_list_insert_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    locked_list bigint;
BEGIN
    SELECT l.id INTO locked_list
    FROM randomization_randomizationlist AS l
    JOIN added_slots AS s ON s.randomization_list_id = l.id
    WHERE l.locked_at IS NOT NULL
      AND (l.method <> 'minimization' OR s.participant_id IS NULL OR s.allocated_at IS NULL)
    LIMIT 1;
    IF locked_list IS NOT NULL THEN
        RAISE EXCEPTION 'Randomization list % is locked: no slot can be added to it', locked_list
            USING ERRCODE = 'TR003';
    END IF;
    RETURN NULL;
END;
$$;
"""

# 0004's function, as it was.
PREVIOUS_SQL = r"""
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
"""


class Migration(migrations.Migration):
    dependencies = [
        ("randomization", "0005_code_break_sheets"),
    ]

    operations = [
        migrations.AddField(
            model_name="randomizationlist",
            name="method",
            field=models.CharField(
                choices=[
                    ("stratified_permuted_blocks", "Stratified permuted blocks"),
                    ("minimization", "Minimization"),
                ],
                default="stratified_permuted_blocks",
                max_length=30,
            ),
        ),
        migrations.RunSQL(GUARD_SQL, PREVIOUS_SQL),
    ]
