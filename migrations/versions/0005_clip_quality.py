"""The quality gate's statistics of each done clip: a JSON `qc` column and its `frames_with_body`.

`qc` holds what worker/qc.py computes (frames, frames_with_body, body_pixels_mean, joints_in_image, flow_mean);
`frames_with_body` is also a column of its own, so that `farm status` counts the done clips whose body is out of
frame for more than half their frames from a small partial index instead of the wide rows. Both are NULL for
clips finished before this revision.

add_column and create_index do not rebuild `clips` on SQLite, so migration 0004's triggers stay.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BODY_OUT_OF_FRAME = sa.text("status = 'done' AND 2 * frames_with_body < frames_done")


def upgrade() -> None:
    op.add_column("clips", sa.Column("qc", sa.JSON(none_as_null=True), nullable=True))
    op.add_column("clips", sa.Column("frames_with_body", sa.Integer(), nullable=True))
    op.create_index(
        "ix_clips_body_out_of_frame",
        "clips",
        ["id"],
        postgresql_where=BODY_OUT_OF_FRAME,
        sqlite_where=BODY_OUT_OF_FRAME,
    )


def downgrade() -> None:
    # Plain ALTER TABLE DROP COLUMN (SQLite 3.35+), not a batch rebuild: that would drop 0004's triggers.
    op.drop_index("ix_clips_body_out_of_frame", table_name="clips")
    op.drop_column("clips", "frames_with_body")
    op.drop_column("clips", "qc")
