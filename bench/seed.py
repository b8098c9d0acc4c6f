"""The benchmark data generator: users with known tokens, conversations and messages, built in SQL.

Nothing here is committed data: every run builds its data set anew in a fresh database.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import sqlalchemy as sa

WORDS = (
    "tax vat invoice ledger payroll pension dividend accrual budget audit depreciation amortisation asset "
    "liability equity revenue expense margin cash flow forecast balance sheet receivable payable inventory "
    "goodwill lease interest loan capital reserve provision deferred income corporate withholding customs "
    "excise bookkeeping reconciliation journal entry trial statement quarter annual fiscal year return filing "
    "deduction allowance credit refund penalty deadline subsidiary consolidation transfer pricing royalty "
    "contractor employee salary bonus benefit insurance rent utilities travel mileage meals equipment vehicle "
    "software subscription license patent research grant startup holding partnership sole trader freelancer "
    "nonprofit charity donation crypto shares options vesting gains losses carryforward"
).split()
COMMON_QUESTIONS = [
    "What is the corporate tax rate?",
    "How does VAT work for small businesses?",
    "How do I calculate depreciation on equipment?",
    "What expenses are tax deductible?",
    "What is the difference between accrual and cash accounting?",
    "When is the annual tax return due?",
    "How do I record a prepayment?",
    "What records must I keep and for how long?",
    "How are dividends taxed?",
    "How do I register for payroll?",
]


@dataclass
class Tokens:
    """Users created for a run: their ids and API tokens, in order."""

    user_ids: list[int]
    tokens: list[str]


def token_for(n: int) -> str:
    """A deterministic API token for benchmark user n."""
    return "luca_bench" + hashlib.sha256(f"bench-user-{n}".encode()).hexdigest()[:40]


def content_sql(seed: str, words: int = 9) -> str:
    """SQL for a sentence of accounting words picked deterministically from an integer seed column."""
    picks = " || ' ' || ".join(f"w[1 + (abs(CAST({seed} AS bigint) * {p}) % {len(WORDS)})::int]" for p in
                               (7, 13, 31, 37, 53, 71, 97, 113, 131, 151, 173)[:words])
    return picks


def seed_users(engine: sa.Engine, count: int, prefix: str) -> Tokens:
    """count users with one known token each."""
    with engine.begin() as conn:
        ids = list(conn.execute(sa.text(
            "INSERT INTO users (email, name, is_admin, created_at) "
            "SELECT :prefix || g || '@bench.local', 'Bench ' || g, false, now() FROM generate_series(1, :n) g "
            "RETURNING id"), {"n": count, "prefix": prefix}).scalars())
        tokens = [token_for(user_id) for user_id in ids]
        conn.execute(sa.text(
            "INSERT INTO api_tokens (user_id, token_hash, prefix, name, created_at) "
            "VALUES (:user_id, :hash, :prefix, 'bench', now())"),
            [{"user_id": i, "hash": hashlib.sha256(t.encode()).hexdigest(), "prefix": t[:12]}
             for i, t in zip(ids, tokens, strict=True)])
    return Tokens(ids, tokens)


def seed_mix(engine: sa.Engine, users: int = 200, conversations: int = 20, messages: int = 10,
             prefix: str = "mix") -> Tokens:
    """The realistic data set for the request mix: users with a history of conversations."""
    made = seed_users(engine, users, prefix)
    words = "ARRAY[" + ",".join(f"'{w}'" for w in WORDS) + "]"
    with engine.begin() as conn:
        conn.execute(sa.text(f"""
            INSERT INTO conversations (id, user_id, title, title_set_by_user, metadata, pinned, has_files,
                                       created_at, updated_at)
            SELECT gen_random_uuid(), u.id, initcap({content_sql('g + u.id', 4)}), false,
                   jsonb_build_object('client', 'c' || (g % 7)), g = 1, false,
                   now() - (g * interval '1 hour'), now() - (g * interval '1 hour')
              FROM unnest(CAST(:ids AS integer[])) AS u(id), generate_series(1, :n) g, (SELECT {words} AS w) v
        """), {"ids": made.user_ids, "n": conversations})
        conn.execute(sa.text(f"""
            INSERT INTO messages (conversation_id, user_id, role, content, status, provider, model, tokens_in,
                                  tokens_out, latency_ms, cached, created_at)
            SELECT c.id, c.user_id, CASE WHEN g % 2 = 1 THEN 'user' ELSE 'assistant' END,
                   {content_sql('g + hashtext(c.id::text)')}, 'complete',
                   CASE WHEN g % 2 = 0 THEN 'bench' END, CASE WHEN g % 2 = 0 THEN 'bench-model' END,
                   CASE WHEN g % 2 = 0 THEN 120 END, CASE WHEN g % 2 = 0 THEN 80 END,
                   CASE WHEN g % 2 = 0 THEN 800 END, false, c.created_at + g * interval '1 second'
              FROM conversations c, generate_series(1, :m) g, (SELECT {words} AS w) v
             WHERE c.user_id = ANY(CAST(:ids AS integer[]))
        """), {"ids": made.user_ids, "m": messages})
    analyze(engine)
    return made


def seed_big(engine: sa.Engine, conversations: int = 100_000, messages: int = 1_000_000,
             deep_conversations: int = 25_000, deep_messages: int = 60_000, users: int = 1000) -> Tokens:
    """The large data set: 100,000 conversations and 1,000,000 messages.

    User 0 of the result owns deep_conversations conversations, one of which holds
    deep_messages messages (so page 1,000 exists in both lists); the rest are spread over
    the other users. The search indexes are dropped during the load and built after it,
    as a bulk load would do.
    """
    made = seed_users(engine, users, "big")
    deep_user = made.user_ids[0]
    words = "ARRAY[" + ",".join(f"'{w}'" for w in WORDS) + "]"
    started = time.monotonic()
    with engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX IF EXISTS messages_search_idx"))
        conn.execute(sa.text("DROP INDEX IF EXISTS conversations_search_idx"))
        conn.execute(sa.text(f"""
            INSERT INTO conversations (id, user_id, title, title_set_by_user, metadata, pinned, has_files,
                                       created_at, updated_at)
            SELECT gen_random_uuid(),
                   CASE WHEN g <= :deep THEN :deep_user
                        ELSE (CAST(:ids AS integer[]))[2 + g % (:users - 1)] END,
                   initcap({content_sql('g', 4)}), false, '{{}}'::jsonb, g % 997 = 0, false,
                   now() - (g * interval '10 seconds'), now() - (g * interval '10 seconds')
              FROM generate_series(1, :n) g, (SELECT {words} AS w) v
        """), {"n": conversations, "deep": deep_conversations, "deep_user": deep_user, "ids": made.user_ids,
               "users": users})
        deep_conversation = conn.execute(sa.text(
            "SELECT id FROM conversations WHERE user_id = :u ORDER BY updated_at DESC LIMIT 1"),
            {"u": deep_user}).scalar_one()
        conn.execute(sa.text(f"""
            INSERT INTO messages (conversation_id, user_id, role, content, status, created_at)
            SELECT :conversation, :deep_user, CASE WHEN g % 2 = 1 THEN 'user' ELSE 'assistant' END,
                   {content_sql('g')}, 'complete', now() - interval '30 days' + g * interval '1 second'
              FROM generate_series(1, :m) g, (SELECT {words} AS w) v
        """), {"conversation": deep_conversation, "deep_user": deep_user, "m": deep_messages})
        conn.execute(sa.text(f"""
            WITH others AS (
                SELECT id, user_id, created_at, row_number() OVER (ORDER BY id) AS n
                  FROM conversations WHERE user_id <> :deep_user)
            INSERT INTO messages (conversation_id, user_id, role, content, status, created_at)
            SELECT o.id, o.user_id, CASE WHEN g % 2 = 1 THEN 'user' ELSE 'assistant' END,
                   {content_sql('g')}, 'complete', o.created_at + (g / :others) * interval '1 second'
              FROM generate_series(1, :m) g
              JOIN others o ON o.n = 1 + g % :others, (SELECT {words} AS w) v
        """), {"deep_user": deep_user, "m": messages - deep_messages,
               "others": conversations - deep_conversations})
        conn.execute(sa.text("CREATE INDEX messages_search_idx ON messages USING gin (user_id, tsv)"))
        conn.execute(sa.text("CREATE INDEX conversations_search_idx ON conversations USING gin (user_id, title_tsv)"))
    analyze(engine)
    print(f"  seeded {conversations:,} conversations and {messages:,} messages in "
          f"{time.monotonic() - started:.0f} s", flush=True)
    return made


def analyze(engine: sa.Engine) -> None:
    """VACUUM ANALYZE, as autovacuum would after a load."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
