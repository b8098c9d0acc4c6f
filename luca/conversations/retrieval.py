"""Documents as passages: chunks with anchors, the best chunks for a question, and the citations of an answer.

A ready document is cut into chunks of about CHUNK_MIN_TOKENS to CHUNK_MAX_TOKENS on its blocks' boundaries
(paragraphs, pages, rows), never across a PDF page, a DOCX heading or an XLSX sheet, with a little overlap.
Each chunk keeps its place ({"page": 37}, {"sheet": "TB", "cells": "A12:D30"}, {"rows": "10-40"} ...) and
the offset and anchor of every block in it, so a citation can point at the row or cell it quotes.

For each question, one full-text query (ts_rank_cd on PostgreSQL, bm25 on SQLite FTS5), filtered by the
user and the conversation, ranks the conversation's chunks against the question's words and the recent
turns'; the best fill AI_FILE_CONTEXT_TOKENS as numbered passages (`[n] filename, page p`).
"""
from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import delete, exists, insert, select, text

from luca.ai.base import estimate_tokens
from luca.ai.context import Passage, format_passages
from luca.documents import Block, DocumentError, Extracted, Limits, line_blocks
from luca.extensions import cache, db
from luca.models import DocumentChunk, File, utcnow
from luca.sandbox import extract_isolated

CHUNK_MIN_TOKENS = 300
CHUNK_MAX_TOKENS = 800
OVERLAP_TOKENS = 60  # the last block of a chunk, when at most this long, starts the next one too
MAX_QUERY_WORDS = 32
CANDIDATES = 40  # chunks the ranking query returns; the budget takes what fits
PRESELECT = 80  # chunks ts_rank keeps for ts_rank_cd to order (PostgreSQL)
MAX_PAIR_WORDS = 10  # up to this many words, ts_rank looks first at the chunks holding two of them
MAX_TURN_WORDS = 8  # of the recent turns' words, after the question's
MIN_OWN_WORDS = 3  # a question with fewer words of its own borrows the recent turns' words
SNIPPET_CHARS = 300
WORD = re.compile(r"\w+", re.UNICODE)
MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
# Words that carry no meaning for ranking; PostgreSQL's english configuration drops them itself, FTS5 does not.
STOPWORDS = frozenset(
    "a an and are as at be by can could did do does for from had has have how i in is it its me my of on or our "
    "please so than that the their them there these this those to us was we were what when where which who why "
    "will with would you your".split())


@dataclass(frozen=True)
class Chunk:
    """A chunk before it is stored: its text, its place, and each block's offset and anchor."""

    text: str
    anchor: dict[str, Any]
    parts: list[tuple[int, dict[str, Any]]]


@dataclass(frozen=True)
class Retrieved:
    """What the documents add to a question: the passages' system message, dedup inputs, and the passages."""

    message: str | None
    keys: list[str]
    passages: list[Passage]


# -- chunking -----------------------------------------------------------------------------------


def group_of(anchor: dict[str, Any]) -> Any:
    """The section a block belongs to; a chunk never spans two (a page, a heading, a sheet)."""
    if "page" in anchor:
        return ("page", anchor["page"])
    if "sheet" in anchor:
        return ("sheet", anchor["sheet"])
    if "heading" in anchor:
        return ("heading", anchor["heading"])
    return None


def split_long(block: Block) -> list[Block]:
    """A block longer than a chunk, cut on blank lines, then lines, then characters, keeping its anchor."""
    limit = CHUNK_MAX_TOKENS * 4
    if len(block.text) <= limit:
        return [block]
    pieces: list[str] = []
    for separator in ("\n\n", "\n"):
        if separator in block.text:
            current = ""
            for part in block.text.split(separator):
                if current and len(current) + len(separator) + len(part) > limit:
                    pieces.append(current)
                    current = part
                else:
                    current = f"{current}{separator}{part}" if current else part
            pieces.append(current)
            break
    else:
        pieces = [block.text]
    out: list[Block] = []
    for piece in pieces:
        out.extend(Block(piece[i:i + limit], block.anchor) for i in range(0, len(piece), limit))
    return [b for b in out if b.text.strip()]


def span(anchors: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The place of a run of blocks: one page, a heading's paragraphs, a sheet's cell range, rows or lines."""
    first = anchors[0]
    if "page" in first:
        return {"page": first["page"]}
    if "sheet" in first:
        ranges = [cell_range(a["cells"]) for a in anchors if a.get("cells")]
        if not ranges:
            return {"sheet": first["sheet"]}
        (c1, r1), (c2, r2) = (min(r[0][0] for r in ranges), min(r[0][1] for r in ranges)), \
            (max(r[1][0] for r in ranges), max(r[1][1] for r in ranges))
        return {"sheet": first["sheet"], "cells": f"{column_letter(c1)}{r1}:{column_letter(c2)}{r2}"}
    if "paragraph" in first:
        numbers = [a["paragraph"] for a in anchors if "paragraph" in a]
        return {"heading": first.get("heading"), "paragraphs": numbered_range(min(numbers), max(numbers))}
    if "row" in first:
        rows = [a["row"] for a in anchors if "row" in a]
        return {"rows": numbered_range(min(rows), max(rows))}
    if "lines" in first:
        starts = [int(a["lines"].split("-")[0]) for a in anchors if "lines" in a]
        ends = [int(a["lines"].split("-")[-1]) for a in anchors if "lines" in a]
        return {"lines": numbered_range(min(starts), max(ends))}
    return {}


def numbered_range(first: int, last: int) -> str:
    """'7' or '7-12'."""
    return str(first) if first == last else f"{first}-{last}"


def cell_range(cells: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """'A14:D14' as ((1, 14), (4, 14)): (column, row) of its corners."""
    corners = [re.fullmatch(r"([A-Z]+)(\d+)", part) for part in cells.split(":")]
    points = [(column_number(m.group(1)), int(m.group(2))) for m in corners if m]
    return points[0], points[-1]


def column_number(letters: str) -> int:
    """'D' -> 4, 'AA' -> 27."""
    number = 0
    for letter in letters:
        number = number * 26 + ord(letter) - 64
    return number


def column_letter(number: int) -> str:
    """4 -> 'D', 27 -> 'AA'."""
    letters = ""
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def make_chunks(blocks: Iterable[Block]) -> list[Chunk]:
    """Cut a document's blocks into chunks of about 300-800 tokens on block boundaries, with a little overlap."""
    chunks: list[Chunk] = []
    current: list[Block] = []
    group: Any = object()

    def close() -> None:
        if current:
            parts, offset = [], 0
            for block in current:
                parts.append((offset, block.anchor))
                offset += len(block.text) + 1
            chunks.append(Chunk("\n".join(b.text for b in current), span([b.anchor for b in current]), parts))

    for block in (piece for whole in blocks for piece in split_long(whole)):
        size = sum(estimate_tokens(b.text) for b in current)
        cost = estimate_tokens(block.text)
        if current and (group_of(block.anchor) != group or size + cost > CHUNK_MAX_TOKENS):
            close()
            same_group = group_of(block.anchor) == group
            last = current[-1]
            overlap = same_group and estimate_tokens(last.text) <= OVERLAP_TOKENS and size >= CHUNK_MIN_TOKENS
            current = [last] if overlap and estimate_tokens(last.text) + cost <= CHUNK_MAX_TOKENS else []
        group = group_of(block.anchor)
        current.append(block)
    close()
    return chunks


def store_chunks(file_id: int, extracted: Extracted) -> int:
    """Replace a file's chunks with those of its extraction (not committed: the caller's commit marks it ready).

    The file's row is locked first, so two jobs chunking one file (the ticker enqueued it again while
    the first was reading) replace each other's chunks instead of adding to them.
    """
    owner = db.session.execute(select(File.user_id, File.conversation_id).where(File.id == file_id)
                               .with_for_update()).first()
    if owner is None:
        return 0
    blocks = extracted.blocks or [Block(extracted.text, {"lines": f"1-{extracted.text.count(chr(10)) + 1}"})]
    chunks = make_chunks(blocks)
    db.session.execute(delete(DocumentChunk).where(DocumentChunk.file_id == file_id))
    if chunks:
        now = utcnow()
        db.session.execute(insert(DocumentChunk), [
            {"file_id": file_id, "conversation_id": owner.conversation_id, "user_id": owner.user_id,
             "position": position, "text": chunk.text, "anchor": chunk.anchor,
             "parts": [[offset, anchor] for offset, anchor in chunk.parts], "tokens": estimate_tokens(chunk.text),
             "created_at": now}
            for position, chunk in enumerate(chunks)])
    return len(chunks)


def chunks_committed(file_id: int) -> None:
    """After the commit of a file's chunks: its owner's cached search results are out of date."""
    user_id = db.session.execute(select(File.user_id).where(File.id == file_id)).scalar()
    db.session.commit()
    if user_id is not None:
        cache.bump_user(user_id)


def files_without_chunks(limit: int = 1000) -> list[int]:
    """Ready files that have no chunks (processed before chunking existed): the reconciler indexes them."""
    chunked = exists().where(DocumentChunk.file_id == File.id)
    return list(db.session.execute(
        select(File.id).where(File.status == "ready", ~chunked).order_by(File.id).limit(limit)).scalars())


# -- retrieval ----------------------------------------------------------------------------------


def query_words(question: str, turns: Sequence[str] = ()) -> list[str]:
    """The ranking query: the question's words, without stop words; a question of fewer than
    MIN_OWN_WORDS ("and since when?") borrows up to MAX_TURN_WORDS from the recent turns, newest first.

    Every word widens the query (any word matches) and reads one more posting list, so the turns'
    words join only when the question alone cannot say what it is about.
    """
    found: list[str] = []
    for index, piece in enumerate((question, *reversed(turns))):
        if index == 1:
            if len(found) >= MIN_OWN_WORDS:
                break
            cap = len(found) + MAX_TURN_WORDS
        for word in WORD.findall(piece.lower()):
            if len(found) >= (MAX_QUERY_WORDS if index == 0 else cap):
                break
            if word not in STOPWORDS and len(word) > 1 and word not in found:
                found.append(word)
    return found


# Any of the words, best first; the tsqueries are inline so the planner matches them against (user_id, tsv).
# ts_rank picks PRESELECT chunks and ts_rank_cd (covers over positions, several times dearer) orders those.
# Both read each chunk's tsvector, kept in the row (STORAGE MAIN, migration 0008), not in TOAST.
PG_RETRIEVE = text("""
SELECT c.id, c.file_id, f.filename, c.text, c.anchor, c.parts, c.tokens,
       ts_rank_cd(c.tsv, to_tsquery('english', :q)) AS rank
  FROM (SELECT id FROM document_chunks
         WHERE user_id = CAST(:user_id AS integer) AND conversation_id = :conversation_id
           AND tsv @@ to_tsquery('english', :q)
         ORDER BY ts_rank(tsv, to_tsquery('english', :q)) DESC, id LIMIT :preselect) best
  JOIN document_chunks c ON c.id = best.id
  JOIN files f ON f.id = c.file_id
 ORDER BY rank DESC, c.id
 LIMIT :limit
""")

# The same ranking, ts_rank computed over fewer chunks. Every position of tsv weighs the same (D, 0.1), so
# ts_rank of an OR query of n distinct lexemes gives a chunk 0.061/n to 0.1/n for each one it holds: a
# chunk holding two outranks every chunk holding one (at most 0.1/n; two, at least 0.122/n). `strong`
# ranks only the chunks :pairs finds (two of the words, any two); when its best PRESELECT all hold two
# (rank >= 0.11/n; a word PostgreSQL drops as a stop word, or two words of one stem, can let a chunk of
# one word in), they are ts_rank's best of every match. Otherwise the second branch, a one-time filter
# not run in the first case, ranks every match as PG_RETRIEVE does.
PG_RETRIEVE_PAIRS = text("""
WITH strong AS MATERIALIZED (
  SELECT id, ts_rank(tsv, to_tsquery('english', :q)) AS rank FROM document_chunks
   WHERE user_id = CAST(:user_id AS integer) AND conversation_id = :conversation_id
     AND tsv @@ to_tsquery('english', :pairs)
   ORDER BY rank DESC, id LIMIT :preselect),
enough AS (
  SELECT count(*) >= :preselect AS yes FROM strong
   WHERE rank >= 0.11 / greatest(length(to_tsvector('english', :q)), 1)),
best AS (
  SELECT id FROM strong WHERE (SELECT yes FROM enough)
  UNION ALL
  (SELECT id FROM document_chunks
    WHERE NOT (SELECT yes FROM enough)
      AND user_id = CAST(:user_id AS integer) AND conversation_id = :conversation_id
      AND tsv @@ to_tsquery('english', :q)
    ORDER BY ts_rank(tsv, to_tsquery('english', :q)) DESC, id LIMIT :preselect))
SELECT c.id, c.file_id, f.filename, c.text, c.anchor, c.parts, c.tokens,
       ts_rank_cd(c.tsv, to_tsquery('english', :q)) AS rank
  FROM best
  JOIN document_chunks c ON c.id = best.id
  JOIN files f ON f.id = c.file_id
 ORDER BY rank DESC, c.id
 LIMIT :limit
""")

SQLITE_RETRIEVE = text("""
SELECT c.id, c.file_id, f.filename, c.text, c.anchor, c.parts, c.tokens, -bm25(document_chunks_fts) AS rank
  FROM document_chunks_fts
  JOIN document_chunks c ON c.id = document_chunks_fts.rowid
  JOIN files f ON f.id = c.file_id
 WHERE document_chunks_fts MATCH :q AND c.user_id = :user_id AND c.conversation_id = :conversation_id
 ORDER BY rank DESC, c.id
 LIMIT :limit
""")

# No word matched (a question such as "summarise it"): the documents' first chunks.
FIRST_CHUNKS = text("""
SELECT c.id, c.file_id, f.filename, c.text, c.anchor, c.parts, c.tokens, 0.0 AS rank
  FROM document_chunks c JOIN files f ON f.id = c.file_id
 WHERE c.user_id = :user_id AND c.conversation_id = :conversation_id
 ORDER BY c.position, c.file_id
 LIMIT :limit
""")


def ranked_chunks(user_id: int, conversation_id: uuid.UUID, words: Sequence[str],
                  limit: int = CANDIDATES) -> list[Any]:
    """The conversation's chunks that contain any of the words, best first; only this user's."""
    if not words:
        return []
    postgres = db.engine.dialect.name == "postgresql"
    conversation = conversation_id if postgres else conversation_id.hex
    pairs = ""
    if postgres:
        statement, expression = PG_RETRIEVE, " | ".join(words)
        # (to_tsquery reads foo_bar as a phrase, whose two lexemes ts_rank counts apart: not for :pairs)
        if 2 <= len(words) <= MAX_PAIR_WORDS and not any("_" in word for word in words):
            statement = PG_RETRIEVE_PAIRS
            pairs = " | ".join(f"{a} & ({' | '.join(words[i + 1:])})" for i, a in enumerate(words[:-1]))
        # psycopg prepares a statement after 5 runs, and PostgreSQL's generic plan of it cannot see the
        # words: measured here, 53 ms instead of 21 in a 5,000-chunk conversation. Plan each question anew.
        db.session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    else:
        statement, expression = SQLITE_RETRIEVE, " OR ".join(f'"{w}"' for w in words)
    return list(db.session.execute(statement, {"q": expression, "pairs": pairs, "user_id": user_id,
                                               "preselect": PRESELECT, "conversation_id": conversation,
                                               "limit": limit}).mappings())


def first_chunks(user_id: int, conversation_id: uuid.UUID, limit: int = CANDIDATES) -> list[Any]:
    """The first chunks of the conversation's documents, for a question none of whose words appear."""
    conversation = conversation_id if db.engine.dialect.name == "postgresql" else conversation_id.hex
    return list(db.session.execute(FIRST_CHUNKS, {"user_id": user_id, "conversation_id": conversation,
                                                  "limit": limit}).mappings())


def retrieve(user_id: int, conversation_id: uuid.UUID, question: str, turns: Sequence[str] = ()) -> Retrieved:
    """The best chunks for a question within AI_FILE_CONTEXT_TOKENS, numbered, as a system message."""
    words = query_words(question, turns)
    rows = ranked_chunks(user_id, conversation_id, words) or first_chunks(user_id, conversation_id)
    budget = current_app.config["AI_FILE_CONTEXT_TOKENS"]
    passages: list[Passage] = []
    for row in rows:
        if row["tokens"] > budget and passages:
            continue  # a smaller chunk further down may still fit
        budget -= row["tokens"]
        passages.append(Passage(n=len(passages) + 1, chunk_id=row["id"], file_id=row["file_id"],
                                filename=row["filename"], anchor=as_json(row["anchor"]),
                                parts=as_json(row["parts"]), text=row["text"]))
        if budget <= 0:
            break
    if not passages:
        return Retrieved(None, [], [])
    return Retrieved(format_passages(passages), [f"chunk:{p.chunk_id}" for p in passages], passages)


def as_json(value: Any) -> Any:
    """A JSON column's value: decoded already on PostgreSQL, a string in a raw SQLite row."""
    if isinstance(value, str):
        return json.loads(value)
    return value


# -- citations ----------------------------------------------------------------------------------


def terms(text_: str) -> set[str]:
    """The meaningful words of a text, lower-cased."""
    return {w for w in WORD.findall(text_.lower()) if w not in STOPWORDS}


def narrow(passage: Passage, wanted: set[str], fallback: set[str] = frozenset()) -> tuple[dict[str, Any], str]:
    """The place and text of the passage's block that best matches the words (a row, a page, a cell)."""
    parts = passage.parts or [[0, passage.anchor]]
    pieces = []
    for index, (offset, anchor) in enumerate(parts):
        end = parts[index + 1][0] - 1 if index + 1 < len(parts) else len(passage.text)
        pieces.append((passage.text[offset:end], anchor))
    scored = [(len(terms(piece) & wanted) * 2 + len(terms(piece) & fallback), -index)
              for index, (piece, _) in enumerate(pieces)]
    best = max(range(len(pieces)), key=lambda i: scored[i])
    piece, anchor = pieces[best] if scored[best][0] > 0 else (passage.text, passage.anchor)
    if scored[best][0] == 0:
        return dict(passage.anchor), piece
    place = dict(anchor)
    if "cells" in place:
        place["cells"] = best_cell(piece, place["cells"], wanted, fallback)
    elif "row" in place:
        place = {"rows": str(place.pop("row"))} if "paragraph" not in place else place
        place.pop("row", None)
    elif "lines" in place:
        place = {"lines": place["lines"]}
    return place, piece


def weight(shared: set[str]) -> int:
    """The weight of shared words: a figure (a word with a digit) counts three times, since answers cite figures."""
    return sum(3 if any(c.isdigit() for c in word) else 1 for word in shared)


def best_cell(row_text: str, cells: str, wanted: set[str], fallback: set[str]) -> str:
    """The cell of an XLSX row whose value best matches the words (values are padded from column A)."""
    (_, row), _ = cell_range(cells)
    values = row_text.split(" | ")
    scores = [weight(terms(v) & wanted) * 2 + weight(terms(v) & fallback) for v in values]
    if not scores or max(scores) == 0:
        return cells
    return f"{column_letter(scores.index(max(scores)) + 1)}{row}"


def snippet_of(piece: str, wanted: set[str]) -> str:
    """At most SNIPPET_CHARS of a passage, around its first matching word."""
    piece = " ".join(piece.split())
    if len(piece) <= SNIPPET_CHARS:
        return piece
    lowered = piece.lower()
    hits = [lowered.find(w) for w in wanted if lowered.find(w) >= 0]
    start = max(0, min(hits) - SNIPPET_CHARS // 3) if hits else 0
    return ("…" if start else "") + piece[start:start + SNIPPET_CHARS].strip() + "…"


def cite(answer: str, passages: Sequence[Passage], question: str = "") -> list[dict[str, Any]] | None:
    """The citations of an answer: each passage whose marker [n] appears, narrowed to what the answer says.

    The words near the marker (the sentence before it) pick the block of the passage, and in a
    spreadsheet row the cell; the question's words break ties.
    """
    if not passages:
        return None
    by_number = {p.n: p for p in passages}
    found: list[dict[str, Any]] = []
    seen: set[int] = set()
    asked = terms(question)
    for match in MARKER.finditer(answer):
        before = answer[max(0, match.start() - 400): match.start()]
        sentence = re.split(r"(?<=[.!?])\s+|\n", before.rstrip())[-1] if before.strip() else ""
        context = terms(sentence) - {str(n) for n in range(1, len(passages) + 1)}
        for number in (int(n) for n in match.group(1).split(",")):
            if number in seen or number not in by_number:
                continue
            seen.add(number)
            passage = by_number[number]
            place, piece = narrow(passage, context, asked)
            found.append({"n": number, "file_id": passage.file_id, "filename": passage.filename, **place,
                          "snippet": snippet_of(piece, context | asked)})
    return found or None


def index_stored_file(file_id: int, limits: Limits) -> str:
    """Chunk a ready file that has no chunks: extract its stored bytes again (in the sandbox) for the anchors.

    A file the current limits refuse is chunked from its stored text, by lines, so the reconciler
    does not come back to it.
    """
    row = db.session.execute(select(File.status, File.data, File.text).where(File.id == file_id)).first()
    if row is None or row.status != "ready" or db.session.execute(
            select(exists().where(DocumentChunk.file_id == file_id))).scalar():
        return "nothing to do"
    try:
        extracted = extract_isolated(row.data, limits)
    except DocumentError:
        stored = row.text or ""
        extracted = Extracted(kind="txt", text=stored, pages=None, truncated=False, blocks=line_blocks(stored))
    count = store_chunks(file_id, extracted)
    db.session.commit()
    chunks_committed(file_id)
    return f"{count} chunks"
