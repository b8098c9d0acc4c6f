"""Documents cut into anchored chunks, the chunks retrieved for a question, and search inside documents."""
from __future__ import annotations

import random
import string
import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_migrate import upgrade

from config import TestConfig
from luca import create_app
from luca.conversations import retrieval
from luca.documents import Block
from luca.extensions import db, jobs
from luca.jobs.reconcile import reconcile
from luca.models import DocumentChunk
from tests.support import ROOT
from tests.support.api import Api, signed, upload
from tests.support.apps import count_statements, provider_overrides
from tests.support.documents import make_pdf, trial_balance
from tests.support.services import temporary_postgres_database


def chunk_places(app: Flask, file_id: int) -> list[dict]:
    """The anchors of a file's chunks, in order."""
    with app.app_context():
        rows = db.session.execute(sa.select(DocumentChunk.anchor).where(DocumentChunk.file_id == file_id)
                                  .order_by(DocumentChunk.position)).scalars().all()
        db.session.remove()
        return list(rows)


# -- chunking ------------------------------------------------------------------------------------


@pytest.mark.sqlite_only
def test_chunks_never_span_pdf_pages() -> None:
    chunks = retrieval.make_chunks([Block("short page", {"page": 1}), Block("another", {"page": 2})])
    assert [c.anchor for c in chunks] == [{"page": 1}, {"page": 2}]


@pytest.mark.sqlite_only
def test_rows_join_into_chunks_of_at_most_800_tokens_with_overlap() -> None:
    blocks = [Block(f"{n} | Supplier {n} | {n * 10} | paid in full " + "x" * 60, {"row": n}) for n in range(1, 201)]
    chunks = retrieval.make_chunks(blocks)
    assert len(chunks) > 3
    assert all(retrieval.estimate_tokens(c.text) <= retrieval.CHUNK_MAX_TOKENS for c in chunks)
    assert all(retrieval.estimate_tokens(c.text) >= retrieval.CHUNK_MIN_TOKENS for c in chunks[:-1])
    first, second = chunks[0].anchor["rows"].split("-"), chunks[1].anchor["rows"].split("-")
    assert first[0] == "1" and int(second[0]) == int(first[1])  # the last row starts the next chunk too
    assert chunks[-1].anchor["rows"].endswith("-200")


@pytest.mark.sqlite_only
def test_a_sheets_rows_make_one_cell_range() -> None:
    blocks = [Block("## Sheet: TB", {"sheet": "TB"}), Block("a | b", {"sheet": "TB", "cells": "A1:B1"}),
              Block("c | d | e", {"sheet": "TB", "cells": "A2:C2"}), Block("x", {"sheet": "Other", "cells": "A1:A1"})]
    assert [c.anchor for c in retrieval.make_chunks(blocks)] == [{"sheet": "TB", "cells": "A1:C2"},
                                                                 {"sheet": "Other", "cells": "A1:A1"}]


@pytest.mark.sqlite_only
def test_a_page_longer_than_a_chunk_is_cut_on_its_lines() -> None:
    page = "\n".join(f"line {n} " + "y" * 100 for n in range(100))
    chunks = retrieval.make_chunks([Block(page, {"page": 5})])
    assert len(chunks) > 2 and all(c.anchor == {"page": 5} for c in chunks)
    assert all(len(c.text) <= retrieval.CHUNK_MAX_TOKENS * 4 for c in chunks)


# -- retrieval -----------------------------------------------------------------------------------


def test_retrieval_is_one_query_and_never_reads_another_users_chunks(app_factory, servers) -> None:
    primary, _ = servers
    app = app_factory(**provider_overrides(primary, DISABLE_QUEUES=True))
    mine, theirs = signed(app), signed(app)
    conversation = mine.new_conversation()
    upload(mine, conversation["id"], "mine.csv", b"payee,amount\nNorthwind,100\n")
    other = theirs.new_conversation()
    upload(theirs, other["id"], "theirs.csv", b"payee,amount\nNorthwind secret,999\n")
    with app.app_context():
        with count_statements(app) as statements:
            found = retrieval.retrieve(mine.user_id, uuid.UUID(conversation["id"]), "Northwind amount")
        # their chunk is in a conversation of theirs; ask for it under my user id as well
        stolen = retrieval.retrieve(mine.user_id, uuid.UUID(other["id"]), "Northwind secret")
        db.session.remove()
    assert [p.filename for p in found.passages] == ["mine.csv"]
    assert len([s for s in statements if "document_chunks" in s]) == 1
    assert stolen.passages == [] and stolen.message is None


def test_the_recent_turns_take_part_in_the_query(app_factory, servers) -> None:
    primary, _ = servers
    app = app_factory(**provider_overrides(primary, DISABLE_QUEUES=True))
    api = signed(app)
    conversation = api.new_conversation()
    upload(api, conversation["id"], "ratios.txt", b"Gearing ratio is 41 percent.\n")
    upload(api, conversation["id"], "people.txt", b"The auditor is Baxter LLP.\n")
    api.ask(conversation["id"], "Who is the auditor?")
    api.ask(conversation["id"], "And since when?")  # no word of the documents: the turns before carry it
    sent = [m["content"] for m in primary.requests[-1]["messages"] if "[1]" in m["content"]][0]
    assert "[1] people.txt, lines 1" in sent and "ratios.txt" not in sent


def test_the_dedup_key_changes_with_the_retrieved_chunks(app_factory, servers) -> None:
    primary, _ = servers
    app = app_factory(**provider_overrides(primary, DISABLE_QUEUES=True))
    api = signed(app)
    conversation = api.new_conversation()
    upload(api, conversation["id"], "a.txt", b"Goodwill impairment of 12 million.\n")
    with app.app_context():
        found = retrieval.retrieve(api.user_id, uuid.UUID(conversation["id"]), "goodwill")
        db.session.remove()
    assert found.keys and all(key.startswith("chunk:") for key in found.keys)


# -- a file processed before chunking --------------------------------------------------------------


def test_a_file_processed_before_chunking_gets_its_chunks_from_the_reconciler(app_factory) -> None:
    app = app_factory(DISABLE_QUEUES=True, JOBS_RECONCILE_GRACE=0)
    api = signed(app)
    conversation = api.new_conversation()
    file_id = upload(api, conversation["id"], "old.pdf", make_pdf(["Intro", "Old lease terms", "End"]))["id"]
    with app.app_context():  # as a file of before this change: ready, with its text, and no chunks
        db.session.execute(sa.delete(DocumentChunk).where(DocumentChunk.file_id == file_id))
        db.session.commit()
        assert retrieval.files_without_chunks() == [file_id]
        db.session.remove()
    assert reconcile(app)["files"] == 1
    assert chunk_places(app, file_id) == [{"page": 1}, {"page": 2}, {"page": 3}]
    with app.app_context():
        assert retrieval.files_without_chunks() == []
        db.session.remove()


def test_without_redis_the_ticker_chunks_a_file_processed_before_chunking(app_factory) -> None:
    app = app_factory(JOBS_RECONCILE_INTERVAL=0.2)
    api = signed(app)
    conversation = api.new_conversation()
    file_id = upload(api, conversation["id"], "old.txt", b"Old notes on the lease.\n")["id"]
    with app.app_context():
        assert jobs.mode == "thread"
        deadline = time.monotonic() + 20
        while api.get(f"/api/files/{file_id}").get_json()["status"] != "ready" and time.monotonic() < deadline:
            time.sleep(0.1)
        db.session.execute(sa.delete(DocumentChunk).where(DocumentChunk.file_id == file_id))
        db.session.commit()
        db.session.remove()
    deadline = time.monotonic() + 20
    while not chunk_places(app, file_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert chunk_places(app, file_id) == [{"lines": "1"}]


# -- search inside documents ------------------------------------------------------------------------


def search(api: Api, q: str) -> list[dict]:
    response = api.get("/api/search", query_string={"q": q})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def test_search_finds_a_word_only_inside_a_document_with_its_page(app_factory) -> None:
    app = app_factory(DISABLE_QUEUES=True)
    api, other = signed(app), signed(app)
    conversation = api.new_conversation(title="Leases")
    file_id = upload(api, conversation["id"], "schedule.pdf",
                     make_pdf(["Cover", "Terms", "The sublessor Quixotic Estates pays rent"]))["id"]
    hits = search(api, "quixotic")
    assert [(h["kind"], h["file_id"], h["filename"], h["page"], h["conversation_id"]) for h in hits] == [
        ("document", file_id, "schedule.pdf", 3, conversation["id"])]
    assert "<mark>Quixotic</mark>" in hits[0]["snippet"]
    assert search(other, "quixotic") == []


def test_a_search_cached_before_a_document_was_ready_finds_it_after(app_factory) -> None:
    app = app_factory(DISABLE_QUEUES=True)
    api = signed(app)
    conversation = api.new_conversation(title="Leases")
    assert search(api, "quixotic") == []  # cached for this user
    upload(api, conversation["id"], "schedule.txt", b"Quixotic Estates sublets the floor.\n")
    assert [h["kind"] for h in search(api, "quixotic")] == ["document"]


def test_document_hits_rank_together_with_titles_and_messages(app_factory) -> None:
    app = app_factory(DISABLE_QUEUES=True)
    api = signed(app)
    conversation = api.new_conversation(title="Zebra accounts")
    upload(api, conversation["id"], "z.txt", b"zebra zebra stripes\n")
    kinds = {h["kind"] for h in search(api, "zebra")}
    assert kinds == {"title", "document"}


def test_search_in_a_spreadsheet_names_the_cell(app_factory) -> None:
    app = app_factory(DISABLE_QUEUES=True)
    api = signed(app)
    conversation = api.new_conversation()
    upload(api, conversation["id"], "tb.xlsx", trial_balance())
    hit = search(api, "suspense")[0]
    assert (hit["kind"], hit["sheet"], hit["cells"]) == ("document", "TB", "B14")


# -- the index on PostgreSQL ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_with_chunks() -> Iterator[tuple[Flask, uuid.UUID]]:
    """A migrated PostgreSQL database with 20,000 chunks of 40 users; user 1's conversation holds 2,000."""
    with temporary_postgres_database("luca_chunks") as url:
        app = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": url})
        with app.app_context():
            upgrade(directory=str(ROOT / "migrations"))
            with db.engine.begin() as conn:
                conn.execute(sa.text("""
                    INSERT INTO users (email, name, is_admin, created_at)
                    SELECT 'user' || g || '@example.com', '', false, now() FROM generate_series(1, 40) g"""))
                conn.execute(sa.text("""
                    INSERT INTO conversations (id, user_id, title, title_set_by_user, metadata, pinned, has_files,
                                               created_at, updated_at)
                    SELECT gen_random_uuid(), g, 'c', false, '{}', false, true, now(), now()
                      FROM generate_series(1, 40) g"""))
                conn.execute(sa.text("""
                    INSERT INTO files (conversation_id, user_id, filename, size, sha256, data, status, progress,
                                       created_at, updated_at)
                    SELECT c.id, c.user_id, 'f' || f || '.pdf', 1, md5(f::text), '', 'ready', 100, now(), now()
                      FROM conversations c, generate_series(1, 5) f"""))
                conn.execute(sa.text("""
                    INSERT INTO document_chunks (file_id, conversation_id, user_id, position, text, anchor, parts,
                                                 tokens, created_at)
                    SELECT f.id, f.conversation_id, f.user_id, g,
                           'page ' || g || ' on ' || (ARRAY['lease', 'payroll', 'audit', 'revenue', 'inventory',
                           'goodwill', 'pension', 'accrual', 'dividend', 'tax'])[1 + g % 10] || ' ' || md5(g::text),
                           jsonb_build_object('page', g), '[]', 300, now()
                      FROM files f, generate_series(1, CASE WHEN f.user_id = 1 THEN 400 ELSE 97 END) g"""))
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM ANALYZE"))
            conversation = db.session.execute(sa.text("SELECT id FROM conversations WHERE user_id = 1")).scalar_one()
            db.session.remove()
            yield app, conversation
            db.engine.dispose()


def test_retrieval_uses_the_user_and_words_index_with_20000_chunks(postgres_with_chunks) -> None:
    app, conversation = postgres_with_chunks
    seen: list[tuple[str, object]] = []

    def record(conn: object, cursor: object, statement: str, parameters: object, *args: object) -> None:
        seen.append((statement, parameters))

    with app.app_context():
        total = db.session.execute(sa.text("SELECT count(*) FROM document_chunks")).scalar_one()
        sa.event.listen(db.engine, "before_cursor_execute", record)
        try:
            found = retrieval.ranked_chunks(1, conversation, ["lease", "goodwill"])
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", record)
        with db.engine.connect() as conn:
            plan = "\n".join(conn.exec_driver_sql("EXPLAIN " + seen[-1][0], seen[-1][1]).scalars())
        db.session.remove()
    assert total >= 20_000
    assert found and all("lease" in row["text"] or "goodwill" in row["text"] for row in found)
    assert "document_chunks_search_idx" in plan, plan
    assert "Seq Scan on document_chunks" not in plan, plan


def test_the_chunks_with_two_of_the_words_first_rank_as_all_the_matches_would(postgres_with_chunks,
                                                                               monkeypatch) -> None:
    # ("page", "lease"): 200 chunks hold both, enough for the preselection, so the second branch (every
    # chunk with either word) never runs; ("lease", "goodwill"): none holds both, ("accrual", "17"): five
    # do, too few, so it does; ("17", "after", "lease"): "after" is a stop word to PostgreSQL, so the pairs
    # find every chunk with "lease", 200, none of which holds two of the words: it does too.
    app, conversation = postgres_with_chunks
    seen: list[tuple[str, object]] = []

    def record(conn: object, cursor: object, statement: str, parameters: object, *args: object) -> None:
        seen.append((statement, parameters))

    found: dict[tuple[str, ...], tuple[list[int], list[int], str]] = {}
    with app.app_context():
        for words in (("page", "lease"), ("lease", "goodwill"), ("accrual", "17"), ("17", "after", "lease"),
                      ("page", "lease", "17")):
            sa.event.listen(db.engine, "before_cursor_execute", record)
            try:
                pairs = [row["id"] for row in retrieval.ranked_chunks(1, conversation, words)]
            finally:
                sa.event.remove(db.engine, "before_cursor_execute", record)
            with db.engine.connect() as conn:
                plan = "\n".join(conn.exec_driver_sql("EXPLAIN ANALYZE " + seen[-1][0], seen[-1][1]).scalars())
            with monkeypatch.context() as patch:
                patch.setattr(retrieval, "MAX_PAIR_WORDS", 0)  # any of the words, all ranked
                plain = [row["id"] for row in retrieval.ranked_chunks(1, conversation, words)]
            found[words] = pairs, plain, plan
        db.session.remove()
    for words, (pairs, plain, _) in found.items():
        assert pairs and pairs == plain, words
    scans = {words: ["never executed" in line for line in plan.splitlines() if "Bitmap Heap Scan" in line]
             for words, (_, _, plan) in found.items()}
    assert scans[("page", "lease")] == [False, True], found[("page", "lease")][2]  # the pairs' scan only
    assert scans[("lease", "goodwill")] == scans[("accrual", "17")] == scans[("17", "after", "lease")] \
        == [False, False]


def toasted_bytes(table: str = "document_chunks") -> int:
    """The bytes of the live values a table keeps out of line, in its TOAST table."""
    toast = db.session.execute(sa.text("SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = "
                                       "CAST(:t AS regclass)"), {"t": table}).scalar_one()
    return db.session.execute(sa.text(f"SELECT coalesce(sum(octet_length(chunk_data)), 0) FROM {toast}")).scalar_one()


def test_the_migration_moves_the_vectors_of_chunks_made_before_it_into_their_rows() -> None:
    # 150 random words: a text of ~1.3 KB that pglz cannot shrink and a tsvector of ~2.4 KB, which the
    # default (EXTENDED) storage moves to the TOAST table, and ts_rank then reads from there.
    rng = random.Random(8)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(8)) for _ in range(150)]
    with temporary_postgres_database("luca_inline") as url:
        app = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": url})
        with app.app_context():
            upgrade(directory=str(ROOT / "migrations"), revision="0007")
            with db.engine.begin() as conn:
                user = conn.execute(sa.text("INSERT INTO users (email, name, is_admin, created_at) "
                                            "VALUES ('old@example.com', '', false, now()) RETURNING id")).scalar_one()
                conversation = conn.execute(sa.text("""
                    INSERT INTO conversations (id, user_id, title, title_set_by_user, metadata, pinned, has_files,
                                               created_at, updated_at)
                    VALUES (gen_random_uuid(), :u, 'c', false, '{}', false, true, now(), now()) RETURNING id"""),
                    {"u": user}).scalar_one()
                conn.execute(sa.text("""
                    INSERT INTO files (conversation_id, user_id, filename, size, sha256, data, status, progress,
                                       created_at, updated_at)
                    VALUES (:c, :u, 'old.pdf', 1, 'x', '', 'ready', 100, now(), now())"""),
                    {"c": conversation, "u": user})
                conn.execute(sa.text("""
                    INSERT INTO document_chunks (file_id, conversation_id, user_id, position, text, anchor, parts,
                                                 tokens, created_at)
                    SELECT id, conversation_id, user_id, 0, :text, '{"page": 1}', '[]', 300, now() FROM files"""),
                    {"text": " ".join(words)})
            vector = db.session.execute(sa.text("SELECT pg_column_size(tsv) FROM document_chunks")).scalar_one()
            before = toasted_bytes()
            db.session.remove()
            upgrade(directory=str(ROOT / "migrations"))
            after = toasted_bytes()
            storage = db.session.execute(sa.text(
                "SELECT attstorage FROM pg_attribute WHERE attrelid = 'document_chunks'::regclass "
                "AND attname = 'tsv'")).scalar_one()
            found = retrieval.ranked_chunks(user, conversation, [words[37], "absent"])
            db.session.remove()
            db.engine.dispose()
    assert vector > 2000 and before >= vector  # out of line before 0008
    assert after < vector  # only the text is out of line now
    assert storage == "m"
    assert [row["anchor"] for row in found] == [{"page": 1}]
