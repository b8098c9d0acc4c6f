"""Where an answer came from (messages.source), and usage records for answers stored in no conversation.

Answers stored before this revision are attributed to "api": which door a stored /v1 answer came
through was not recorded.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(18, 10)
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Add messages.source and the usage_records table."""
    # A plain ADD COLUMN: a batch (copy-and-rename) on SQLite would drop the search triggers.
    op.add_column("messages", sa.Column("source", sa.String(16), nullable=False, server_default="api"))
    op.create_table(
        "usage_records",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(64), nullable=True),
        sa.Column("model", sa.String(128), nullable=True),
        sa.Column("tokens_in", sa.Integer(), nullable=True),
        sa.Column("tokens_out", sa.Integer(), nullable=True),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("cost_usd", MONEY, nullable=True),
        sa.Column("saved_usd", MONEY, nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_usage_records_user_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_usage_records"),
    )
    op.create_index("usage_records_user_created_idx", "usage_records", ["user_id", "created_at"])
    op.create_index("usage_records_created_idx", "usage_records", ["created_at"])


def downgrade() -> None:
    """Drop what upgrade() added."""
    op.drop_index("usage_records_created_idx", "usage_records")
    op.drop_index("usage_records_user_created_idx", "usage_records")
    op.drop_table("usage_records")
    op.execute("ALTER TABLE messages DROP COLUMN source")
