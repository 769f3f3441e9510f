"""A worker that fails several clips in a row pauses itself: `workers.paused_until` and `pause_reason`.

The worker writes both when it pauses (in the database's time) and clears them when it takes clips again;
`farm status` and the dashboard show them. Only `workers` changes: `clips` is not rebuilt, so migration
0004's triggers stay.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workers", sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("workers", sa.Column("pause_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE DROP COLUMN (SQLite 3.35+), not a batch rebuild.
    op.drop_column("workers", "pause_reason")
    op.drop_column("workers", "paused_until")
