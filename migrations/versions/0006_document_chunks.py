"""Document chunks with their anchors and a full-text index scoped by user; messages.citations.

Chunks of files processed before this revision are made by the reconciler (luca.jobs.tasks.reconcile
finds ready files without chunks and re-extracts them), not here: the anchors (pages, sheets and cells)
come from the document itself, which only the sandboxed extraction reads.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

SQLITE_FTS = [
    """CREATE VIRTUAL TABLE document_chunks_fts USING fts5(
           text, content='document_chunks', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER document_chunks_fts_insert AFTER INSERT ON document_chunks BEGIN
           INSERT INTO document_chunks_fts(rowid, text) VALUES (new.id, new.text);
       END""",
    """CREATE TRIGGER document_chunks_fts_delete AFTER DELETE ON document_chunks BEGIN
           INSERT INTO document_chunks_fts(document_chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
       END""",
]

POSTGRES_SEARCH = [
    "CREATE EXTENSION IF NOT EXISTS btree_gin",
    """ALTER TABLE document_chunks ADD COLUMN tsv tsvector
           GENERATED ALWAYS AS (to_tsvector('english', text)) STORED""",
    # Retrieval and search are always for one user: narrow by user and by words in the same index.
    "CREATE INDEX document_chunks_search_idx ON document_chunks USING gin (user_id, tsv)",
]


def upgrade() -> None:
    """Create document_chunks and its full-text index; add messages.citations."""
    op.add_column("messages", sa.Column("citations", JSON, nullable=True))  # plain ADD COLUMN keeps the triggers
    op.create_table(
        "document_chunks",
        sa.Column("id", BIGINT_ID, primary_key=True, autoincrement=True),
        sa.Column("file_id", BIGINT_ID, nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("anchor", JSON, nullable=False),
        sa.Column("parts", JSON, nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["file_id"], ["files.id"], name="fk_document_chunks_file_id_files", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"],
                                name="fk_document_chunks_conversation_id_conversations", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_document_chunks_user_id_users",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_document_chunks"),
    )
    op.create_index("document_chunks_file_idx", "document_chunks", ["file_id", "position"])
    op.create_index("document_chunks_conversation_idx", "document_chunks", ["conversation_id", "file_id", "position"])
    statements = POSTGRES_SEARCH if op.get_bind().dialect.name == "postgresql" else SQLITE_FTS
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    """Drop what upgrade() added."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS document_chunks_fts")
    op.drop_table("document_chunks")
    op.execute("ALTER TABLE messages DROP COLUMN citations")
