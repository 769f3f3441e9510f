"""The database logs clip changes itself; a worker's current clip and done count are read from the clips.

A trigger writes a clip_events row whenever a clip is inserted or its status or attempt count changes, with
the clip's `changed_by` and `change_note`, which every statement that changes a clip sets. So each change is
one statement (a worker's claim and completion are one round trip each), and no code path can forget to log.
`workers.current_clip_id` and `workers.clips_done` go: the clips say the same (`worker`, `status`), always
current, so a worker's heartbeat only has to say that it is alive and can be sent at most every few seconds;
an index on (status, worker) keeps the dashboard's per-worker counts fast.

On SQLite a later batch migration that rebuilds `clips` drops these triggers: such a migration must create
them again.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

EVENT_COLUMNS = "clip_id, at, from_status, to_status, worker, detail"

POSTGRESQL = [
    f"""
    CREATE FUNCTION log_clip_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO clip_events ({EVENT_COLUMNS})
            VALUES (NEW.id, NEW.updated_at, NULL, NEW.status, NEW.changed_by, NEW.change_note);
        ELSE
            INSERT INTO clip_events ({EVENT_COLUMNS})
            VALUES (NEW.id, NEW.updated_at, OLD.status, NEW.status, NEW.changed_by, NEW.change_note);
        END IF;
        RETURN NULL;
    END $$
    """,
    "CREATE TRIGGER clips_log_insert AFTER INSERT ON clips FOR EACH ROW EXECUTE FUNCTION log_clip_change()",
    """
    CREATE TRIGGER clips_log_update AFTER UPDATE ON clips FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.attempts IS DISTINCT FROM NEW.attempts)
    EXECUTE FUNCTION log_clip_change()
    """,
]
SQLITE = [
    f"""
    CREATE TRIGGER clips_log_insert AFTER INSERT ON clips BEGIN
        INSERT INTO clip_events ({EVENT_COLUMNS})
        VALUES (NEW.id, NEW.updated_at, NULL, NEW.status, NEW.changed_by, NEW.change_note);
    END
    """,
    f"""
    CREATE TRIGGER clips_log_update AFTER UPDATE OF status, attempts ON clips
    WHEN OLD.status IS NOT NEW.status OR OLD.attempts IS NOT NEW.attempts BEGIN
        INSERT INTO clip_events ({EVENT_COLUMNS})
        VALUES (NEW.id, NEW.updated_at, OLD.status, NEW.status, NEW.changed_by, NEW.change_note);
    END
    """,
]


def upgrade() -> None:
    with op.batch_alter_table("clips") as batch:
        batch.add_column(sa.Column("changed_by", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("change_note", sa.Text(), nullable=True))
        batch.create_index("ix_clips_status_worker", ["status", "worker"])
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("current_clip_id")
        batch.drop_column("clips_done")
    for statement in POSTGRESQL if _postgresql() else SQLITE:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER clips_log_update" + (" ON clips" if _postgresql() else ""))
    op.execute("DROP TRIGGER clips_log_insert" + (" ON clips" if _postgresql() else ""))
    if _postgresql():
        op.execute("DROP FUNCTION log_clip_change()")
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("clips_done", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("current_clip_id", sa.Integer(), nullable=True))
    with op.batch_alter_table("clips") as batch:
        batch.drop_index("ix_clips_status_worker")
        batch.drop_column("change_note")
        batch.drop_column("changed_by")


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"
