"""Full-text search in the same database: PostgreSQL tsvector + GIN, SQLite FTS5.

Titles, messages and the passages of documents (document_chunks) are ranked together.
Search is always scoped to one user. Snippets are HTML-escaped, with <mark> around
the matched words, so a client can insert them as HTML safely.
"""
from __future__ import annotations

import html
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, text
from sqlalchemy.sql.elements import TextClause

from luca.extensions import db

# Match markers that cannot occur in text a user typed (control characters are
# stripped from snippets before they are escaped).
START, STOP = "\x02", "\x03"
WORD = re.compile(r"\w+", re.UNICODE)
MAX_WORDS = 12


@dataclass(frozen=True)
class Hit:
    """One search result: a title, a message or a document's passage that matched (with its file and place)."""

    kind: str
    conversation_id: uuid.UUID
    conversation_title: str | None
    message_id: int | None
    role: str | None
    snippet: str
    rank: float
    created_at: datetime
    file_id: int | None = None
    filename: str | None = None
    place: dict[str, Any] = field(default_factory=dict)  # a document's: {"page": 3}, {"sheet", "cells"} ...

    def fields(self) -> dict[str, Any]:
        """The hit as the API's SearchHit takes it: its fields, with the place's keys among them."""
        return {**{name: getattr(self, name) for name in self.__dataclass_fields__ if name != "place"}, **self.place}


def words(query: str) -> list[str]:
    """The words of a query, operators and quotes dropped; what both engines search for."""
    return WORD.findall(query.lower())[:MAX_WORDS]


def fts5_query(query: str) -> str | None:
    """A safe FTS5 MATCH expression: every word quoted, all required."""
    found = words(query)
    return " ".join(f'"{w}"' for w in found) if found else None


def pg_query(query: str) -> str | None:
    """The words joined for plainto_tsquery, which cannot raise a syntax error."""
    found = words(query)
    return " ".join(found) if found else None


def render_snippet(raw: str | None) -> str:
    """Escape a snippet for HTML and turn the engine's markers into <mark> tags."""
    raw = re.sub(r"[\x00-\x01\x04-\x08\x0b\x0c\x0e-\x1f]", "", raw or "")
    return html.escape(raw).replace(START, "<mark>").replace(STOP, "</mark>")


# The tsquery is written inline (not in a CTE) so the planner sees a constant it can
# match against the (user_id, tsv) GIN indexes.
PG_SEARCH = text(f"""
WITH hits AS (
    (SELECT m.conversation_id, m.id AS message_id, m.role, m.created_at, NULL::bigint AS chunk_id,
            ts_rank(m.tsv, plainto_tsquery('english', :q)) AS rank
       FROM messages m
      WHERE m.user_id = CAST(:user_id AS integer) AND m.tsv @@ plainto_tsquery('english', :q)
      ORDER BY rank DESC, m.id DESC LIMIT :limit)
    UNION ALL
    (SELECT c.id, NULL, NULL, c.created_at, NULL, ts_rank(c.title_tsv, plainto_tsquery('english', :q)) * 2 AS rank
       FROM conversations c
      WHERE c.user_id = CAST(:user_id AS integer) AND c.title_tsv @@ plainto_tsquery('english', :q)
      ORDER BY rank DESC LIMIT :limit)
    UNION ALL
    (SELECT d.conversation_id, NULL, NULL, d.created_at, d.id, ts_rank(d.tsv, plainto_tsquery('english', :q)) AS rank
       FROM document_chunks d
      WHERE d.user_id = CAST(:user_id AS integer) AND d.tsv @@ plainto_tsquery('english', :q)
      ORDER BY rank DESC, d.id DESC LIMIT :limit)
    ORDER BY rank DESC LIMIT :limit
)
SELECT h.conversation_id, c.title AS conversation_title, h.message_id, h.role, h.rank, h.created_at, h.chunk_id,
       d.file_id, f.filename, d.anchor, d.parts, d.text AS chunk_text,
       ts_headline('english', COALESCE(m.content, d.text, c.title), plainto_tsquery('english', :q),
                   'StartSel={START}, StopSel={STOP}, MaxWords=30, MinWords=12, MaxFragments=2') AS snippet
  FROM hits h
  JOIN conversations c ON c.id = h.conversation_id
  LEFT JOIN messages m ON m.id = h.message_id
  LEFT JOIN document_chunks d ON d.id = h.chunk_id
  LEFT JOIN files f ON f.id = d.file_id
 ORDER BY h.rank DESC
""")

SQLITE_SEARCH = text(f"""
SELECT * FROM (
    SELECT m.conversation_id, c.title AS conversation_title, m.id AS message_id, m.role,
           -bm25(messages_fts) AS rank, m.created_at,
           snippet(messages_fts, 0, '{START}', '{STOP}', '…', 24) AS snippet,
           NULL AS chunk_id, NULL AS file_id, NULL AS filename, NULL AS anchor, NULL AS parts, NULL AS chunk_text
      FROM messages_fts
      JOIN messages m ON m.id = messages_fts.rowid
      JOIN conversations c ON c.id = m.conversation_id
     WHERE messages_fts MATCH :q AND m.user_id = :user_id
    UNION ALL
    SELECT c.id, c.title, NULL, NULL, -bm25(conversations_fts) * 2, c.created_at,
           highlight(conversations_fts, 0, '{START}', '{STOP}'), NULL, NULL, NULL, NULL, NULL, NULL
      FROM conversations_fts
      JOIN conversations c ON c.id = conversations_fts.conversation_id
     WHERE conversations_fts MATCH :q AND c.user_id = :user_id
    UNION ALL
    SELECT d.conversation_id, c.title, NULL, NULL, -bm25(document_chunks_fts), d.created_at,
           snippet(document_chunks_fts, 0, '{START}', '{STOP}', '…', 24), d.id, d.file_id, f.filename,
           d.anchor, d.parts, d.text
      FROM document_chunks_fts
      JOIN document_chunks d ON d.id = document_chunks_fts.rowid
      JOIN conversations c ON c.id = d.conversation_id
      JOIN files f ON f.id = d.file_id
     WHERE document_chunks_fts MATCH :q AND d.user_id = :user_id
) ORDER BY rank DESC LIMIT :limit
""")


def is_postgres() -> bool:
    """Whether the app's database is PostgreSQL (else SQLite)."""
    return db.engine.dialect.name == "postgresql"


def search(user_id: int, query: str, limit: int) -> list[Hit]:
    """Rank the user's titles and messages that contain every word of query."""
    expression = pg_query(query) if is_postgres() else fts5_query(query)
    if expression is None:
        return []
    statement = PG_SEARCH if is_postgres() else SQLITE_SEARCH
    rows = db.session.execute(statement, {"q": expression, "user_id": user_id, "limit": limit}).mappings()
    return [hit_from_row(row, query) for row in rows]


def document_place(row: Any, query: str) -> dict[str, Any]:
    """A document hit's file and place: the block of its chunk (page, row, cell ...) that holds the words."""
    from luca.ai.context import Passage
    from luca.conversations.retrieval import as_json, narrow

    passage = Passage(n=0, chunk_id=row["chunk_id"], file_id=row["file_id"], filename=row["filename"],
                      anchor=as_json(row["anchor"]), text=row["chunk_text"], parts=as_json(row["parts"]))
    place, _ = narrow(passage, set(words(query)))
    return {"file_id": row["file_id"], "filename": row["filename"], "place": place}


def hit_from_row(row: Any, query: str = "") -> Hit:
    """Turn a result row of either engine into a Hit."""
    conversation_id = row["conversation_id"]
    created_at = row["created_at"]
    document = row["chunk_id"] is not None
    return Hit(
        kind="document" if document else "message" if row["message_id"] is not None else "title",
        **(document_place(row, query) if document else {}),
        conversation_id=conversation_id if isinstance(conversation_id, uuid.UUID) else uuid.UUID(conversation_id),
        conversation_title=row["conversation_title"],
        message_id=row["message_id"],
        role=row["role"],
        snippet=render_snippet(row["snippet"]),
        rank=float(row["rank"]),
        created_at=created_at if isinstance(created_at, datetime) else datetime.fromisoformat(created_at),
    )


def matching_conversations(user_id: int, query: str) -> Select[Any] | TextClause | None:
    """A subquery of the ids of the user's conversations whose title or messages match query."""
    if is_postgres():
        expression = pg_query(query)
        if expression is None:
            return None
        return text("""
            SELECT m.conversation_id FROM messages m
             WHERE m.user_id = CAST(:mq_user AS integer) AND m.tsv @@ plainto_tsquery('english', :mq_q)
            UNION
            SELECT c.id FROM conversations c
             WHERE c.user_id = CAST(:mq_user AS integer) AND c.title_tsv @@ plainto_tsquery('english', :mq_q)
        """).bindparams(mq_user=user_id, mq_q=expression)
    expression = fts5_query(query)
    if expression is None:
        return None
    return text("""
        SELECT m.conversation_id FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid
         WHERE messages_fts MATCH :mq_q AND m.user_id = :mq_user
        UNION
        SELECT conversations_fts.conversation_id FROM conversations_fts
          JOIN conversations c ON c.id = conversations_fts.conversation_id
         WHERE conversations_fts MATCH :mq_q AND c.user_id = :mq_user
    """).bindparams(mq_user=user_id, mq_q=expression)
