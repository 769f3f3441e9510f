"""A worker that stops cleanly says so: `workers.stopped_at`.

Set when a worker process shuts down (a SIGTERM, `docker compose stop`) and cleared by its next heartbeat,
so the dashboard shows a stopped worker as gone at once rather than after its heartbeat goes stale, and
no clip waits for a host whose workers have all stopped. Only `workers` changes.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workers", sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("workers", "stopped_at")
