"""Document chunks keep their tsvector in the row (STORAGE MAIN) instead of the TOAST table.

Ranking reads the tsvector of every chunk that matches a question (ts_rank over ~3,000 chunks of a
large conversation). A chunk's vector is 2-3 KB: with the default EXTENDED storage PostgreSQL moved it
out of line, so each ts_rank paid a TOAST index lookup and two chunk fetches (about 6 us of the 7 a
chunk cost). MAIN keeps it in the heap row and moves the chunk's text out instead, which only the 40
returned chunks read. Measured on the retrieval bench: p95 of the ranking query about 0.55x.

SET STORAGE applies to rows written afterwards, so the existing chunks are rewritten once here
(UPDATE of text recomputes the generated tsv, which is then stored in line). SQLite has no TOAST:
its FTS5 index is untouched.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Store document_chunks.tsv in line and move the existing chunks' vectors there."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE document_chunks ALTER COLUMN tsv SET STORAGE MAIN")
    op.execute("UPDATE document_chunks SET text = text")


def downgrade() -> None:
    """Back to the default storage; chunks already in line stay there until they are written again."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE document_chunks ALTER COLUMN tsv SET STORAGE EXTENDED")
