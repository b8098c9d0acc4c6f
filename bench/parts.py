"""The benchmark parts. Each returns its figures (and the targets they are held against)."""
from __future__ import annotations

import json
import random
import re
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.client import Client, mean, percentile, run_concurrently
from bench.seed import COMMON_QUESTIONS, WORDS, Tokens, seed_big, seed_mix
from bench.stack import BIN, ROOT, Provider, Stack
from luca.pagination import encode_cursor

AI_NAMES = {"send"}  # requests that wait for an AI answer


@dataclass
class Data:
    """What the seed made: mix users, the crowd of 10,000, their conversations, and the large data set."""

    mix: Tokens
    crowd: Tokens | None
    conversations: dict[int, list[str]]
    big: Tokens | None


@dataclass
class Context:
    """What every part gets: the stack, the database, the data, and the run's options."""

    stack: Stack
    database: str
    engine: sa.Engine
    data: Data
    quick: bool
    latency_ms: int
    common_share: float = 0.5


def seed(engine: sa.Engine, big: bool, crowd: bool) -> Data:
    """Build the mix data set (and the crowd and the large one when a part needs them)."""
    print("seeding the mix data set ...", flush=True)
    mix = seed_mix(engine)
    crowd_tokens = None
    if crowd:
        print("seeding 10,000 users with 5 conversations each ...", flush=True)
        crowd_tokens = seed_mix(engine, users=10_000, conversations=5, messages=6, prefix="crowd")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT user_id, id FROM conversations WHERE user_id = ANY(:ids)"),
                            {"ids": mix.user_ids + (crowd_tokens.user_ids if crowd_tokens else [])}).all()
    conversations: dict[int, list[str]] = {}
    for user_id, conversation_id in rows:
        conversations.setdefault(user_id, []).append(str(conversation_id))
    large = None
    if big:
        print("seeding 100,000 conversations and 1,000,000 messages ...", flush=True)
        large = seed_big(engine)
    return Data(mix, crowd_tokens, conversations, large)


# -- running Luca ---------------------------------------------------------------------------------
def luca_env(ctx: Context, provider_url: str, **settings: str) -> dict[str, str]:
    """Environment of a Luca process on the bench stack with one provider."""
    return ctx.stack.env(ctx.database, REDIS_URL=ctx.stack.redis_url, AI_PROVIDERS="bench",
                         BENCH_BASE_URL=provider_url, BENCH_MODEL="bench-model", BENCH_API_KEY="bench",
                         WEB_CONCURRENCY="2", GUNICORN_THREADS="32", **settings)


class Luca:
    """gunicorn (and, with queues on, a worker) in one mode; stopped on exit."""

    def __init__(self, ctx: Context, provider: Provider, before: bool = False, cache: bool = True) -> None:
        switches = {"DISABLE_CACHE": "true", "DISABLE_QUEUES": "true"} if before else {}
        if not cache:
            switches["DISABLE_CACHE"] = "true"
        self.ctx = ctx
        self.env = luca_env(ctx, provider.url, **switches)
        self.before = before

    def __enter__(self) -> Luca:
        self.ctx.stack.flush_redis()
        self.gunicorn = self.ctx.stack.start_gunicorn(self.env)
        self.base = self.gunicorn.base
        self.worker = None if self.before else self.ctx.stack.start_worker(self.env)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.worker is not None:
            self.ctx.stack.stop(self.worker)
        self.ctx.stack.stop(self.gunicorn)


def provider(ctx: Context, latency_ms: int | None = None) -> Provider:
    """A provider server process with the given answer latency (the run's default otherwise)."""
    return Provider(ctx.stack.start_provider("bench", ctx.latency_ms if latency_ms is None else latency_ms))


def sql_statements(base: str) -> tuple[float, float]:
    """(requests, SQL statements) recorded so far, summed over routes and gunicorn workers."""
    count = total = 0.0
    status, text = fetch_text(base + "/metrics")
    for line in text.splitlines():
        if line.startswith("luca_http_sql_statements_count"):
            count += float(line.rsplit(" ", 1)[1])
        elif line.startswith("luca_http_sql_statements_sum"):
            total += float(line.rsplit(" ", 1)[1])
    return count, total


def fetch_text(url: str) -> tuple[int, str]:
    """GET a URL as text."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read().decode()


# -- the mix -------------------------------------------------------------------------------------------
def write_mix_data(ctx: Context, accounts: Tokens) -> Path:
    """The locustfile's data: tokens, conversation ids, common questions, search words."""
    path = ctx.stack.tmp / f"mix-{len(accounts.tokens)}.json"
    users = [{"token": token, "conversations": ctx.data.conversations[user_id]}
             for user_id, token in zip(accounts.user_ids, accounts.tokens, strict=True)]
    path.write_text(json.dumps({"users": users, "common_questions": COMMON_QUESTIONS, "search_words": WORDS}))
    return path


def locust(ctx: Context, base: str, users: int, seconds: int, think: float, spawn_rate: float | None = None,
           common_share: float = 0.5, accounts: Tokens | None = None) -> list[tuple[str, float, int]]:
    """Run the mix with locust in its own process; return (name, ms, status) of every request.

    Locust users take the accounts (the mix users unless given) in turn.
    """
    raw = ctx.stack.tmp / f"raw-{uuid.uuid4().hex[:6]}.json"
    env = {**ctx.stack.env(ctx.database), "BENCH_DATA": str(write_mix_data(ctx, accounts or ctx.data.mix)),
           "BENCH_RAW": str(raw), "BENCH_THINK": str(think), "BENCH_COMMON_SHARE": str(common_share)}
    command = [str(BIN / "locust"), "-f", str(ROOT / "bench" / "locustfile.py"), "--headless", "--only-summary",
               "-u", str(users), "-r", str(spawn_rate or max(1, users / 5)), "-t", f"{seconds}s",
               "--host", base, "--stop-timeout", "30", "--loglevel", "WARNING"]
    subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=seconds + 300)
    return [tuple(item) for item in json.loads(raw.read_text())]  # type: ignore[misc]


def summarise(raw: list[tuple[str, float, int]], skip_seconds_of: int = 0) -> dict[str, Any]:
    """Latency figures overall, without the AI answers, and per request name."""
    ok = [(name, ms) for name, ms, status in raw]
    non_ai = [ms for name, ms in ok if name not in AI_NAMES]
    every = [ms for _, ms in ok]
    per_name = {}
    for name in sorted({n for n, _ in ok}):
        values = [ms for n, ms in ok if n == name]
        per_name[name] = {"count": len(values), "avg_ms": round(mean(values), 1),
                          "p95_ms": round(percentile(values, 95), 1)}
    failed = Counter(str(status) for _, _, status in raw if status >= 500 or status == 0)  # 0: no response
    return {"requests": len(raw), "errors_5xx": sum(failed.values()), "errors_by_status": dict(failed),
            "avg_ms": round(mean(every), 1),
            "p95_ms": round(percentile(every, 95), 1), "non_ai_avg_ms": round(mean(non_ai), 1),
            "non_ai_p95_ms": round(percentile(non_ai, 95), 1), "per_request": per_name}


def titled_since(ctx: Context, since: float) -> int:
    """Conversations created since a moment whose title a job wrote (one provider call each)."""
    with ctx.engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT count(*) FROM conversations WHERE created_at >= to_timestamp(:t) AT TIME ZONE 'UTC' "
            "AND title IS NOT NULL AND NOT title_set_by_user"), {"t": since}).scalar_one()


def common_questions_since(ctx: Context, since: float) -> tuple[int, int]:
    """How many common questions were asked since a moment, and how many distinct ones."""
    with ctx.engine.connect() as conn:
        return tuple(conn.execute(sa.text(
            "SELECT count(*), count(DISTINCT content) FROM messages WHERE role = 'user' AND content = ANY(:common) "
            "AND created_at >= to_timestamp(:t) AT TIME ZONE 'UTC'"), {"common": COMMON_QUESTIONS, "t": since}).one())


def run_mix(ctx: Context, prov: Provider, before: bool, users: int, seconds: int) -> dict[str, Any]:
    """One mode of the mix: latency, statements per request, provider calls per 1,000 messages."""
    with Luca(ctx, prov, before=before) as luca:
        prov.reset()
        since = time.time()
        requests_before, statements_before = sql_statements(luca.base)
        raw = locust(ctx, luca.base, users, seconds, think=1.0, common_share=ctx.common_share)
        requests_after, statements_after = sql_statements(luca.base)
        time.sleep(5)  # let the worker finish the titles of the last conversations
        calls = prov.stats()["requests"]
        titles = titled_since(ctx, since)
        common, distinct_common = common_questions_since(ctx, since)
    figures = summarise(raw)
    messages = figures["per_request"].get("send", {}).get("count", 0)
    answer_calls = max(0, calls - titles)
    figures.update(
        common_questions=common, distinct_common_questions=distinct_common,
        # Every message needs a provider call except a repeat of a common question already answered.
        minimum_answer_calls_per_1000_messages=round(1000 * (messages - (common - distinct_common))
                                                     / max(1, messages), 1))
    figures.update(
        sql_per_request=round((statements_after - statements_before) / max(1, requests_after - requests_before), 2),
        messages=messages, provider_calls=calls, title_calls=titles,
        answer_calls_per_1000_messages=round(1000 * answer_calls / max(1, messages), 1),
        provider_calls_per_1000_messages=round(1000 * calls / max(1, messages), 1))
    return figures


def part_mix(ctx: Context) -> dict[str, Any]:
    """Before (DISABLE_CACHE, DISABLE_QUEUES) and after (everything on) on the same request mix."""
    prov = provider(ctx)
    users, seconds = (30, 30) if ctx.quick else (50, 90)
    result: dict[str, Any] = {"users": users, "seconds": seconds, "think_s": 1.0, "common_share": ctx.common_share,
                              "provider_latency_ms": ctx.latency_ms}
    for mode, before in (("before", True), ("after", False)):
        print(f"  {mode} ...", flush=True)
        result[mode] = run_mix(ctx, prov, before, users, seconds)
    b, a = result["before"], result["after"]
    result["ratios"] = {
        "avg_response_before_over_after": round(b["avg_ms"] / a["avg_ms"], 2),
        "sql_after_over_before": round(a["sql_per_request"] / b["sql_per_request"], 2),
        "answer_calls_after_over_before": round(a["answer_calls_per_1000_messages"]
                                                / max(1, b["answer_calls_per_1000_messages"]), 2),
    }
    return result


def part_capacity(ctx: Context) -> dict[str, Any]:
    """Concurrent users (1 s think time) held at p95 under 1 s for everything but AI answers, before and after."""
    prov = provider(ctx)
    steps = [25, 50, 100, 200, 400] if ctx.quick else [25, 50, 100, 200, 300, 400, 600, 800]
    seconds = 15 if ctx.quick else 25
    result: dict[str, Any] = {"steps": steps, "seconds_per_step": seconds, "think_s": 1.0}
    for mode, before in (("before", True), ("after", False)):
        held, table = 0, []
        with Luca(ctx, prov, before=before) as luca:
            for users in steps:
                figures = summarise(locust(ctx, luca.base, users, seconds, think=1.0))
                table.append({"users": users, "non_ai_p95_ms": figures["non_ai_p95_ms"],
                              "requests": figures["requests"], "errors_5xx": figures["errors_5xx"]})
                print(f"  {mode}: {users} users -> p95 {figures['non_ai_p95_ms']} ms", flush=True)
                if figures["non_ai_p95_ms"] >= 1000 or figures["errors_5xx"]:
                    break
                held = users
        result[mode] = {"held_users": held, "steps": table}
    result["ratio_after_over_before"] = round(result["after"]["held_users"] / max(1, result["before"]["held_users"]), 2)
    return result


def part_users10k(ctx: Context) -> dict[str, Any]:
    """10,000 simulated users, each with an account of their own, 30 s think time, everything on.

    Figures: p95 of everything but AI answers.
    """
    assert ctx.data.crowd is not None
    prov = provider(ctx)
    users = 2000 if ctx.quick else 10_000
    seconds = 60 if ctx.quick else 150
    with Luca(ctx, prov) as luca:
        figures = summarise(locust(ctx, luca.base, users, seconds, think=30.0, spawn_rate=users / 50,
                                   accounts=ctx.data.crowd))
    figures.update(users=users, think_s=30, seconds=seconds)
    return figures


# -- overhead ------------------------------------------------------------------------------------------
def part_overhead(ctx: Context) -> dict[str, Any]:
    """Luca's response time minus the provider call it made, p50 and p99, at 1, 10 and 50 concurrent chats."""
    latency = 100
    prov = provider(ctx, latency)
    users = ctx.data.mix.tokens
    result: dict[str, Any] = {"provider_latency_ms": latency, "levels": {}}
    with Luca(ctx, prov) as luca:
        for concurrency, per_chat in ((1, 100 if ctx.quick else 300), (10, 30 if ctx.quick else 60),
                                      (50, 8 if ctx.quick else 16)):
            def chat(i: int) -> list[float]:
                client = Client(luca.base, users[i % len(users)])
                conversation = client.call("POST", "/api/conversations", {"title": "overhead"}).body
                path = f"/api/conversations/{conversation['id']}/messages"
                overheads = []
                for n in range(per_chat):
                    reply = client.call("POST", path, {"content": f"q {uuid.uuid4()}", "cache": False})
                    if reply.status == 201:
                        # (everything, without the provider's own answer time; without Luca's whole provider call)
                        ms = reply.seconds * 1000
                        overheads.append((ms - latency, ms - reply.body["answer"]["latency_ms"]))
                client.close()
                return overheads

            chat(0)  # warm the connection pools
            samples = [x for chunk in run_concurrently(concurrency, chat) for x in chunk]
            total, around = [a for a, _ in samples], [b for _, b in samples]
            result["levels"][str(concurrency)] = {"samples": len(samples),
                                                  "p50_ms": round(percentile(total, 50), 2),
                                                  "p99_ms": round(percentile(total, 99), 2),
                                                  "outside_provider_call_p50_ms": round(percentile(around, 50), 2),
                                                  "outside_provider_call_p99_ms": round(percentile(around, 99), 2)}
            print(f"  {concurrency} chats: {result['levels'][str(concurrency)]}", flush=True)
    return result


# -- throughput against a bare Flask endpoint -------------------------------------------------------------
def wrk(url: str, token: str | None, seconds: int) -> float:
    """Requests per second that wrk gets from url (2 threads, 32 connections)."""
    command = ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", url]
    if token:
        command[1:1] = ["-H", f"Authorization: Bearer {token}"]
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if not match or errors:
        raise RuntimeError(f"wrk failed or saw errors:\n{output}")
    return float(match.group(1))


def part_throughput(ctx: Context) -> dict[str, Any]:
    """Cached conversation list throughput against a bare Flask endpoint serving the same JSON."""
    prov = provider(ctx)
    token = ctx.data.mix.tokens[0]
    seconds = 10 if ctx.quick else 20
    with Luca(ctx, prov) as luca:
        page = Client(luca.base, token).call("GET", "/api/conversations?limit=20").body
        body = ctx.stack.tmp / "bare.json"
        body.write_text(json.dumps(page))
        luca_rps = wrk(f"{luca.base}/api/conversations?limit=20", token, seconds)
    bare_env = {**luca_env(ctx, prov.url), "BENCH_BARE_BODY": str(body)}
    process = ctx.stack.start_gunicorn(bare_env, app="bench.bare_app:app")
    try:
        bare_rps = wrk(f"{process.base}/conversations", None, seconds)
    finally:
        ctx.stack.stop(process)
    return {"luca_cached_list_rps": round(luca_rps), "bare_flask_rps": round(bare_rps),
            "ratio": round(luca_rps / bare_rps, 2), "wrk": "-t2 -c32", "seconds": seconds}


# -- deep pages and search on the large data set ------------------------------------------------------------
def timed_sql(engine: sa.Engine, statement: str, params: dict[str, Any], runs: int) -> float:
    """Median milliseconds of a query over runs (after one warm-up)."""
    times = []
    with engine.connect() as conn:
        conn.execute(sa.text(statement), params).all()
        for _ in range(runs):
            started = time.perf_counter()
            conn.execute(sa.text(statement), params).all()
            times.append((time.perf_counter() - started) * 1000)
    return round(percentile(times, 50), 2)


def timed_http(client: Client, path: str, runs: int) -> float:
    """Median milliseconds of a GET over runs (after one warm-up)."""
    client.call("GET", path)
    return round(percentile([client.call("GET", path).seconds * 1000 for _ in range(runs)], 50), 2)


def part_deep(ctx: Context) -> dict[str, Any]:
    """Page 1 against page 1,000, by cursor and by OFFSET, with 100,000 conversations and 1,000,000 messages."""
    assert ctx.data.big is not None
    user, token = ctx.data.big.user_ids[0], ctx.data.big.tokens[0]
    runs = 10 if ctx.quick else 30
    with ctx.engine.connect() as conn:
        conversation = conn.execute(sa.text(
            "SELECT conversation_id FROM messages WHERE user_id = :u GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"),
            {"u": user}).scalar_one()
        conv_row = conn.execute(sa.text(
            "SELECT pinned, updated_at, id FROM conversations WHERE user_id = :u "
            "ORDER BY pinned DESC, updated_at DESC, id DESC OFFSET :o LIMIT 1"), {"u": user, "o": 999 * 20 - 1}).one()
        msg_row = conn.execute(sa.text(
            "SELECT created_at, id FROM messages WHERE conversation_id = :c "
            "ORDER BY created_at DESC, id DESC OFFSET :o LIMIT 1"), {"c": conversation, "o": 999 * 50 - 1}).one()
    conv_cursor = encode_cursor(list(conv_row))
    msg_cursor = encode_cursor(list(msg_row))
    keyset_conv = ("SELECT * FROM conversations WHERE user_id = :u {where} "
                   "ORDER BY pinned DESC, updated_at DESC, id DESC LIMIT 21")
    keyset_msg = ("SELECT m.* FROM messages m JOIN conversations c ON c.id = m.conversation_id "
                  "WHERE m.conversation_id = :c AND c.user_id = :u {where} "
                  "ORDER BY m.created_at DESC, m.id DESC LIMIT 51")
    sql = {
        "conversations_page1_cursor_ms": timed_sql(ctx.engine, keyset_conv.format(where=""), {"u": user}, runs),
        "conversations_page1000_cursor_ms": timed_sql(
            ctx.engine, keyset_conv.format(where="AND (pinned, updated_at, id) < (:p, :t, :i)"),
            {"u": user, "p": conv_row[0], "t": conv_row[1], "i": conv_row[2]}, runs),
        "conversations_page1000_offset_ms": timed_sql(
            ctx.engine, keyset_conv.format(where="") .replace("LIMIT 21", "OFFSET 19980 LIMIT 21"), {"u": user}, runs),
        "messages_page1_cursor_ms": timed_sql(ctx.engine, keyset_msg.format(where=""), {"c": conversation, "u": user},
                                              runs),
        "messages_page1000_cursor_ms": timed_sql(
            ctx.engine, keyset_msg.format(where="AND (m.created_at, m.id) < (:t, :i)"),
            {"c": conversation, "u": user, "t": msg_row[0], "i": msg_row[1]}, runs),
        "messages_page1000_offset_ms": timed_sql(
            ctx.engine, keyset_msg.format(where="").replace("LIMIT 51", "OFFSET 49950 LIMIT 51"),
            {"c": conversation, "u": user}, runs),
    }
    prov = provider(ctx)
    with Luca(ctx, prov, cache=False) as luca:
        client = Client(luca.base, token)
        http = {
            "conversations_page1_ms": timed_http(client, "/api/conversations?limit=20", runs),
            "conversations_page1000_ms": timed_http(client, f"/api/conversations?limit=20&cursor={conv_cursor}", runs),
            "messages_page1_ms": timed_http(client, f"/api/conversations/{conversation}/messages?limit=50", runs),
            "messages_page1000_ms": timed_http(
                client, f"/api/conversations/{conversation}/messages?limit=50&cursor={msg_cursor}", runs),
        }
        client.close()
    return {"runs": runs, "sql": sql, "http": http, "ratios": {
        "conversations_http_page1000_over_page1": round(http["conversations_page1000_ms"]
                                                        / http["conversations_page1_ms"], 2),
        "messages_http_page1000_over_page1": round(http["messages_page1000_ms"] / http["messages_page1_ms"], 2),
        "conversations_offset_over_cursor": round(sql["conversations_page1000_offset_ms"]
                                                  / sql["conversations_page1000_cursor_ms"], 1),
        "messages_offset_over_cursor": round(sql["messages_page1000_offset_ms"]
                                             / sql["messages_page1000_cursor_ms"], 1)}}


def part_search(ctx: Context) -> dict[str, Any]:
    """Search latency over 1,000,000 messages: the busiest user and ordinary users, one- and two-word queries."""
    assert ctx.data.big is not None
    rng = random.Random(7)
    count = 150 if ctx.quick else 600
    prov = provider(ctx)
    timings: list[float] = []
    with Luca(ctx, prov, cache=False) as luca:
        clients = {token: Client(luca.base, token) for token in ctx.data.big.tokens[:20]}
        tokens = list(clients)
        for client in clients.values():
            client.call("GET", "/api/search?q=tax")
        for n in range(count):
            token = tokens[0] if n % 3 == 0 else rng.choice(tokens[1:])
            words = " ".join(rng.sample(WORDS, 1 if n % 2 else 2))
            reply = clients[token].call("GET", f"/api/search?q={words.replace(' ', '+')}")
            if reply.status == 200:
                timings.append(reply.seconds * 1000)
        for client in clients.values():
            client.close()
    return {"queries": len(timings), "messages": 1_000_000, "p50_ms": round(percentile(timings, 50), 2),
            "p95_ms": round(percentile(timings, 95), 2), "max_ms": round(max(timings), 2)}


def part_retrieval(ctx: Context) -> dict[str, Any]:
    """The chunks for a question over 100,000 document chunks (see bench/retrieval.py)."""
    from bench import retrieval

    return retrieval.part(ctx.database, ctx.quick)


# -- breakers and deduplication --------------------------------------------------------------------------
def part_breaker(ctx: Context) -> dict[str, Any]:
    """16 concurrent 500 ms answers through one provider's breaker: wall time against 500 ms."""
    prov = provider(ctx, 500)
    tokens = ctx.data.mix.tokens
    with Luca(ctx, prov) as luca:
        clients = [Client(luca.base, tokens[i]) for i in range(16)]
        conversations = [c.call("POST", "/api/conversations", {"title": "breaker"}).body["id"] for c in clients]
        rounds = []
        for _ in range(3):  # the first round also warms connection pools and provider clients
            prov.reset()
            started = time.perf_counter()
            statuses = run_concurrently(16, lambda i: clients[i].call(
                "POST", f"/api/conversations/{conversations[i]}/messages",
                {"content": f"breaker {uuid.uuid4()}", "cache": False}).status)
            rounds.append(((time.perf_counter() - started) * 1000, prov.stats()["max_active"]))
        wall, most = min(rounds[1:])
        for client in clients:
            client.close()
    return {"answers": 16, "answer_latency_ms": 500, "statuses": sorted(set(statuses)),
            "rounds_ms": [round(r[0]) for r in rounds], "wall_ms": round(wall, 1),
            "wall_over_latency": round(wall / 500, 2), "provider_max_concurrent": most}


def part_dedup(ctx: Context) -> dict[str, Any]:
    """A workload with repeats, some of them concurrent: provider calls made against the minimum possible."""
    prov = provider(ctx, 300)
    tokens = ctx.data.mix.tokens
    questions = [f"{q} ({n})" for n, q in enumerate(COMMON_QUESTIONS * 2)]  # 20 distinct questions
    asks_each = 10
    with Luca(ctx, prov) as luca:
        prov.reset()

        def ask(token: str, question: str) -> int:
            client = Client(luca.base, token)
            conversation = client.call("POST", "/api/conversations", {"title": "dedup"}).body
            status = client.call("POST", f"/api/conversations/{conversation['id']}/messages",
                                 {"content": question}).status
            client.close()
            return status

        statuses = []
        for n, question in enumerate(questions):
            # Half the askers at the same moment, the other half one after another.
            concurrent = asks_each // 2
            statuses += run_concurrently(concurrent, lambda i: ask(tokens[(n * asks_each + i) % len(tokens)],
                                                                   question))
            statuses += [ask(tokens[(n * asks_each + i) % len(tokens)], question)
                         for i in range(concurrent, asks_each)]
        calls = prov.stats()["requests"]
    return {"requests": len(statuses), "distinct_questions": len(questions), "statuses": sorted(set(statuses)),
            "provider_calls": calls, "minimum_calls": len(questions), "extra_calls": calls - len(questions)}

