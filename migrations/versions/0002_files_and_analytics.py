"""Uploaded files (bytes kept in the database), daily analytics, and conversations.has_files.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create files, analytics_daily and analytics_rollups; add conversations.has_files."""
    # A plain ADD COLUMN: a batch (copy-and-rename) on SQLite would drop the search triggers.
    op.add_column("conversations", sa.Column("has_files", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "files",
        sa.Column("id", BIGINT_ID, primary_key=True, autoincrement=True),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("progress", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("kind", sa.String(16), nullable=True),
        sa.Column("pages", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("text_chars", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"],
                                name="fk_files_conversation_id_conversations", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_files_user_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_files"),
    )
    op.create_index("files_conversation_created_idx", "files", ["conversation_id", "created_at"])
    # The reconciler's scan: files still pending, or processing for too long.
    op.create_index("files_status_updated_idx", "files", ["status", "updated_at"])
    op.create_table(
        "analytics_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("tokens_in", sa.Integer(), nullable=False),
        sa.Column("tokens_out", sa.Integer(), nullable=False),
        sa.Column("latency_mean_ms", sa.Double(), nullable=True),
        sa.Column("latency_p95_ms", sa.Double(), nullable=True),
        sa.Column("cached", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("day", "provider", "model", "role", name="pk_analytics_daily"),
    )
    op.create_table(
        "analytics_rollups",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("computed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("day", name="pk_analytics_rollups"),
    )


def downgrade() -> None:
    """Drop what upgrade() added."""
    op.drop_table("analytics_rollups")
    op.drop_table("analytics_daily")
    op.drop_table("files")
    op.execute("ALTER TABLE conversations DROP COLUMN has_files")
