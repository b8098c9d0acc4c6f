"""Users, API tokens, conversations and messages, with list indexes and full-text search.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

SQLITE_FTS = [
    # Messages: an external-content FTS5 index keyed by the message id.
    """CREATE VIRTUAL TABLE messages_fts USING fts5(
           content, content='messages', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
           INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
       END""",
    """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
           INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
       END""",
    """CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
           INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
           INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
       END""",
    # Conversation titles: conversations have UUID keys, so the FTS table keeps its own copy.
    """CREATE VIRTUAL TABLE conversations_fts USING fts5(
           title, conversation_id UNINDEXED, tokenize='porter unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER conversations_fts_insert AFTER INSERT ON conversations
       WHEN new.title IS NOT NULL BEGIN
           INSERT INTO conversations_fts(title, conversation_id) VALUES (new.title, new.id);
       END""",
    """CREATE TRIGGER conversations_fts_delete AFTER DELETE ON conversations BEGIN
           DELETE FROM conversations_fts WHERE conversation_id = old.id;
       END""",
    """CREATE TRIGGER conversations_fts_update AFTER UPDATE OF title ON conversations BEGIN
           DELETE FROM conversations_fts WHERE conversation_id = old.id;
           INSERT INTO conversations_fts(title, conversation_id)
               SELECT new.title, new.id WHERE new.title IS NOT NULL;
       END""",
]

POSTGRES_SEARCH = [
    "CREATE EXTENSION IF NOT EXISTS btree_gin",
    """ALTER TABLE conversations ADD COLUMN title_tsv tsvector
           GENERATED ALWAYS AS (to_tsvector('english', coalesce(title, ''))) STORED""",
    """ALTER TABLE messages ADD COLUMN tsv tsvector
           GENERATED ALWAYS AS (to_tsvector('english', content)) STORED""",
    # Search is always for one user: narrow by user and by words in the same index.
    "CREATE INDEX conversations_search_idx ON conversations USING gin (user_id, title_tsv)",
    "CREATE INDEX messages_search_idx ON messages USING gin (user_id, tsv)",
    "CREATE INDEX conversations_metadata_idx ON conversations USING gin (metadata jsonb_path_ops)",
]


def upgrade() -> None:
    """Create the tables, their indexes and the search machinery of this database."""
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("name", sa.String(120), nullable=False, server_default=""),
        sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("email", name="uq_users_email"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("name", sa.String(80), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_api_tokens_user_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    op.create_table(
        "conversations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(200), nullable=True),
        sa.Column("title_set_by_user", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_conversations_user_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
    )
    op.create_index("conversations_user_created_idx", "conversations", ["user_id", "created_at"])
    op.create_index("conversations_user_activity_idx", "conversations", ["user_id", "pinned", "updated_at", "id"])
    op.create_table(
        "messages",
        sa.Column("id", BIGINT_ID, primary_key=True, autoincrement=True),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="complete"),
        sa.Column("provider", sa.String(64), nullable=True),
        sa.Column("model", sa.String(128), nullable=True),
        sa.Column("tokens_in", sa.Integer(), nullable=True),
        sa.Column("tokens_out", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("cached", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"],
                                name="fk_messages_conversation_id_conversations", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_messages_user_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
    )
    op.create_index("messages_conversation_created_idx", "messages", ["conversation_id", "created_at"])
    op.create_index("messages_role_created_idx", "messages", ["role", "created_at"])

    statements = POSTGRES_SEARCH if op.get_bind().dialect.name == "postgresql" else SQLITE_FTS
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    """Drop everything upgrade() created."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS conversations_fts")
        op.execute("DROP TABLE IF EXISTS messages_fts")
    op.drop_table("messages")
    op.drop_table("conversations")
    op.drop_table("api_tokens")
    op.drop_table("users")
