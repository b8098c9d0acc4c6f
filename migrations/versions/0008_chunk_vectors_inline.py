"""Document chunks keep their tsvector in the row (STORAGE MAIN) instead of the TOAST table.

Ranking reads the tsvector of every chunk that matches a question (ts_rank over ~2,800 chunks of the
retrieval bench's busiest conversation). A chunk's vector is 2-3 KB: with the default EXTENDED storage
PostgreSQL moved it out of line, and each read was a TOAST index lookup and two chunk fetches, about
3 us, where ts_rank itself costs about 1. MAIN keeps it in the heap row (0.2 us) and moves the chunk's
text out instead, which only the ~40 returned chunks read. Measured on the bench's data, old and new
layout interleaved: retrieve() p95 0.6x (22.6 -> 13.5 ms), the same passages.

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
