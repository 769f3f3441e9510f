"""Indexes for the bookkeeping service: progress, throughput and listings by state without reading specs.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clips") as batch:
        batch.drop_index("ix_clips_status")
        batch.create_index(
            "ix_clips_progress",
            ["split", "run", "status"],
            postgresql_include=["frame_start", "frame_stop", "frames_done"],
        )
        batch.create_index(
            "ix_clips_status_finished",
            ["status", "finished_at"],
            postgresql_include=["frames_done", "render_seconds"],
        )
        batch.create_index("ix_clips_status_updated", ["status", "updated_at", "id"])


def downgrade() -> None:
    with op.batch_alter_table("clips") as batch:
        batch.drop_index("ix_clips_status_updated")
        batch.drop_index("ix_clips_status_finished")
        batch.drop_index("ix_clips_progress")
        batch.create_index("ix_clips_status", ["status"])
