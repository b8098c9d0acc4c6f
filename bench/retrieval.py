"""The retrieval benchmark: the chunks for a question, over 100,000 chunks on PostgreSQL.

100 users hold 100,000 chunks: each user two conversations of five documents of 100 chunks each, except
the busiest, whose one conversation holds ten documents of 500 chunks (5,000). A chunk is about 150
words: accounting words (bench.seed.WORDS, which every question shares with many chunks) and words of a
20,000-word tail. Each question is a few accounting words and a few tail words, plus the recent turns;
what is timed is `retrieval.retrieve()` in this process (the one ranking query, the passages and their
message), against the bench's PostgreSQL.
"""
from __future__ import annotations

import random
import time
import uuid
from typing import Any

import sqlalchemy as sa

from bench.client import percentile
from bench.seed import WORDS

CHUNKS = 100_000
USERS = 100
TAIL = 20_000


def seed_chunks(engine: sa.Engine) -> list[tuple[int, uuid.UUID]]:
    """Users, conversations, files and 100,000 chunks; returns (user id, conversation id) of each conversation."""
    common = list(WORDS)
    with engine.begin() as conn:
        first_user = conn.execute(sa.text("""
            INSERT INTO users (email, name, is_admin, created_at)
            SELECT 'retrieval' || g || '@example.com', '', false, now() FROM generate_series(1, :n) g
            RETURNING id"""), {"n": USERS}).scalars().all()[0]
        conn.execute(sa.text("""
            INSERT INTO conversations (id, user_id, title, title_set_by_user, metadata, pinned, has_files,
                                       created_at, updated_at)
            SELECT gen_random_uuid(), u, 'documents', true, '{}', false, true, now(), now()
              FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) u, generate_series(1, CASE WHEN u = :first THEN 1 ELSE 2 END)"""),
            {"first": first_user, "last": first_user + USERS - 1})
        conn.execute(sa.text("""
            INSERT INTO files (conversation_id, user_id, filename, size, sha256, data, status, progress, kind, pages,
                               created_at, updated_at)
            SELECT c.id, c.user_id, 'report-' || f || '.pdf', 1, md5(c.id::text || f), '', 'ready', 100, 'pdf', 500,
                   now(), now()
              FROM conversations c, generate_series(1, CASE WHEN c.user_id = :first THEN 10 ELSE 5 END) f
             WHERE c.user_id BETWEEN :first AND :last"""), {"first": first_user, "last": first_user + USERS - 1})
        conn.execute(sa.text("""
            INSERT INTO document_chunks (file_id, conversation_id, user_id, position, text, anchor, parts, tokens,
                                         created_at)
            SELECT f.id, f.conversation_id, f.user_id, p,
                   (SELECT string_agg(CASE WHEN w % 4 = 0 THEN (CAST(:common AS text[]))[1 + floor(random() * :ncommon)::int]
                                           ELSE 'tail' || floor(power(random(), 2) * :tail)::int END, ' ')
                      FROM generate_series(1, 150 + p % 7) w),
                   jsonb_build_object('page', p), '[]', 300, now()
              FROM files f, generate_series(1, CASE WHEN f.user_id = :first THEN 500 ELSE 100 END) p
             WHERE f.user_id BETWEEN :first AND :last"""),
            {"first": first_user, "last": first_user + USERS - 1, "common": common, "ncommon": len(common),
             "tail": TAIL})
        rows = conn.execute(sa.text("SELECT user_id, id FROM conversations WHERE user_id BETWEEN :a AND :b"),
                            {"a": first_user, "b": first_user + USERS - 1}).all()
        total = conn.execute(sa.text("SELECT count(*) FROM document_chunks")).scalar_one()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE document_chunks"))
    assert total >= CHUNKS, total
    busiest = min(rows)[0]
    return sorted(rows, key=lambda row: row[0] != busiest)


def part(database: str, quick: bool) -> dict[str, Any]:
    """Time retrieval.retrieve() for questions of the busiest user (a third) and of others."""
    from config import Config
    from luca import create_app
    from luca.extensions import shutdown

    engine = sa.create_engine(database)
    print("seeding 100,000 document chunks ...", flush=True)
    started = time.monotonic()
    conversations = seed_chunks(engine)
    seeded = round(time.monotonic() - started)
    engine.dispose()
    app = create_app(Config, {"SQLALCHEMY_DATABASE_URI": database, "REDIS_URL": None})
    try:
        figures = measure(app, conversations, quick)
    finally:
        shutdown(app)
    return {"chunks": CHUNKS, "users": USERS, "busiest_conversation_chunks": 5000, "seed_seconds": seeded, **figures}


def measure(app: Any, conversations: list[tuple[int, uuid.UUID]], quick: bool) -> dict[str, Any]:
    """Time retrieve() for questions in the busiest conversation (a third) and in others."""
    from luca.conversations import retrieval
    from luca.extensions import db

    rng = random.Random(18)
    common = list(WORDS)
    count = 300 if quick else 1500
    timings: list[float] = []
    passages: list[int] = []
    busiest_timings: list[float] = []
    with app.app_context():
        for n in range(count + 50):
            user_id, conversation_id = conversations[0] if n % 3 == 0 else rng.choice(conversations[1:])
            question = " ".join(rng.sample(common, 2) + [f"tail{int(rng.random() ** 2 * TAIL)}" for _ in range(3)])
            turns = [" ".join(rng.sample(common, 6)), " ".join(rng.sample(common, 10))]
            began = time.perf_counter()
            found = retrieval.retrieve(user_id, conversation_id, question, turns)
            elapsed = (time.perf_counter() - began) * 1000
            db.session.remove()
            if n >= 50:  # the first ones warm the connection pool and the buffer cache
                timings.append(elapsed)
                passages.append(len(found.passages))
                if n % 3 == 0:
                    busiest_timings.append(elapsed)
    return {"questions": len(timings), "p50_ms": round(percentile(timings, 50), 2),
            "p95_ms": round(percentile(timings, 95), 2), "max_ms": round(max(timings), 2),
            "busiest_p95_ms": round(percentile(busiest_timings, 95), 2),
            "others_p95_ms": round(percentile([t for i, t in enumerate(timings) if (i + 50) % 3], 95), 2),
            "passages_mean": round(sum(passages) / len(passages), 1)}
