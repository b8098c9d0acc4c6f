"""The job outbox: work a request could not enqueue because Redis was down.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create job_outbox."""
    op.create_table(
        "job_outbox",
        sa.Column("id", BIGINT_ID, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(200), nullable=False),
        sa.Column("args", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_job_outbox"),
        sa.UniqueConstraint("job_id", name="uq_job_outbox_job_id"),
    )


def downgrade() -> None:
    """Drop what upgrade() added."""
    op.drop_table("job_outbox")
