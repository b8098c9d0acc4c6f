"""Render docs/BENCHMARKS.md from docs/benchmarks.json: every figure beside its target and comparison."""
from __future__ import annotations

import math
from typing import Any

NOTES_MARK = "<!-- notes -->"


def verdict(ok: bool | None) -> str:
    """met / missed / not measured."""
    return "not measured" if ok is None else "**met**" if ok else "**missed**"


def fmt(value: Any, unit: str = "") -> str:
    """A figure for a table cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        value = f"{value:,.2f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.0f}"
    elif isinstance(value, int):
        value = f"{value:,}"
    return f"{value}{unit}"


def header(part: dict[str, Any]) -> str:
    """When and how a part was measured."""
    return f"_Measured {part['measured_at']} by `{part['command']}` in {part['wall_seconds']} s._\n"


def section_mix(p: dict[str, Any]) -> str:
    b, a, r = p["before"], p["after"], p["ratios"]
    rows = [
        ("average response (all requests)", fmt(b["avg_ms"], " ms"), fmt(a["avg_ms"], " ms"),
         f"{r['avg_response_before_over_after']}× faster", "≥ 3× faster", r["avg_response_before_over_after"] >= 3),
        ("p95 response (all requests)", fmt(b["p95_ms"], " ms"), fmt(a["p95_ms"], " ms"), "", "", None),
        ("average / p95 without AI answers", f"{fmt(b['non_ai_avg_ms'])} / {fmt(b['non_ai_p95_ms'], ' ms')}",
         f"{fmt(a['non_ai_avg_ms'])} / {fmt(a['non_ai_p95_ms'], ' ms')}", "", "", None),
        ("SQL statements per request", fmt(b["sql_per_request"]), fmt(a["sql_per_request"]),
         f"{r['sql_after_over_before']} of before", "≤ ⅓ of before", r["sql_after_over_before"] <= 1 / 3),
        ("answer calls to the provider per 1,000 messages", fmt(b["answer_calls_per_1000_messages"]),
         fmt(a["answer_calls_per_1000_messages"]), f"{r['answer_calls_after_over_before']} of before",
         f"cut by the share of repeats: ≤ {fmt(a['minimum_answer_calls_per_1000_messages'])} (+2 % for titles "
         "still running)",
         a["answer_calls_per_1000_messages"] <= a["minimum_answer_calls_per_1000_messages"] * 1.02 + 1),
        ("all provider calls per 1,000 messages (answers + titles)", fmt(b["provider_calls_per_1000_messages"]),
         fmt(a["provider_calls_per_1000_messages"]), "", "", None),
        ("requests served / 5xx", f"{fmt(b['requests'])} / {b['errors_5xx']}", f"{fmt(a['requests'])} / {a['errors_5xx']}",
         "", "no 5xx", b["errors_5xx"] == 0 and a["errors_5xx"] == 0),
    ]
    out = [header(p), f"{p['users']} locust users, {p['think_s']} s think time, {p['seconds']} s per mode; "
           f"weights list 35, open 20, page 20, search 10, send 15 (a send is a common first question in a new "
           f"conversation with probability {p['common_share']}, otherwise a new follow-up); provider latency "
           f"{p['provider_latency_ms']} ms. Before: `DISABLE_CACHE=true DISABLE_QUEUES=true`; after: everything on.\n",
           "| figure | before | after | comparison | target | verdict |", "| --- | --- | --- | --- | --- | --- |"]
    out += [f"| {name} | {before} | {after} | {cmp} | {target} | {verdict(ok) if target else ''} |"
            for name, before, after, cmp, target, ok in rows]
    out += ["", "Per request (average / p95, ms):", "", "| request | before | after |", "| --- | --- | --- |"]
    for name in sorted(set(b["per_request"]) | set(a["per_request"])):
        cell = lambda m: (f"{fmt(m[name]['avg_ms'])} / {fmt(m[name]['p95_ms'])} ({fmt(m[name]['count'])})"  # noqa: E731
                          if name in m else "—")
        out.append(f"| {name} | {cell(b['per_request'])} | {cell(a['per_request'])} |")
    return "\n".join(out)


def section_capacity(p: dict[str, Any]) -> str:
    out = [header(p), f"Locust users with {p['think_s']} s think time, {p['seconds_per_step']} s per step, stepping up "
           "until the p95 of everything but AI answers reaches 1 s (or a 5xx appears).\n",
           "| users | before: p95 (ms) | after: p95 (ms) |", "| --- | --- | --- |"]
    before = {s["users"]: s for s in p["before"]["steps"]}
    after = {s["users"]: s for s in p["after"]["steps"]}
    for users in p["steps"]:
        cell = lambda table: fmt(table[users]["non_ai_p95_ms"]) if users in table else "—"  # noqa: E731
        out.append(f"| {users} | {cell(before)} | {cell(after)} |")
    ratio = p["ratio_after_over_before"]
    out += ["", f"Held at p95 < 1 s: **{p['before']['held_users']}** users before, **{p['after']['held_users']}** "
            f"after — {ratio}× (target: 10×, {verdict(ratio >= 10)})."]
    return "\n".join(out)


def section_users10k(p: dict[str, Any]) -> str:
    ok = p["non_ai_p95_ms"] < 1000 and p["errors_5xx"] == 0
    return "\n".join([
        header(p),
        f"{fmt(p['users'])} locust users, each signed in as an account of its own (5 conversations of 6 "
        f"messages), {p['think_s']} s think time, {p['seconds']} s of load, everything on; "
        f"{fmt(p['requests'] / p['seconds'])} requests/s served.\n",
        "| figure | measured | target | verdict |", "| --- | --- | --- | --- |",
        f"| p95 without AI answers | {fmt(p['non_ai_p95_ms'], ' ms')} | < 1,000 ms | {verdict(ok)} |",
        f"| average without AI answers | {fmt(p['non_ai_avg_ms'], ' ms')} | | |",
        f"| requests / 5xx | {fmt(p['requests'])} / {p['errors_5xx']} | no 5xx | |"])


def section_overhead(p: dict[str, Any]) -> str:
    out = [header(p), "Each chat sends unique questions with `\"cache\": false` to a provider that answers after "
           f"{p['provider_latency_ms']} ms. Overhead = the response time the client saw minus those "
           f"{p['provider_latency_ms']} ms: everything Luca adds, its SDK call and the loopback hops included. "
           "The last columns leave out Luca's whole provider call (`latency_ms` of the answer) instead.\n",
           "| concurrent chats | samples | overhead p50 | overhead p99 | target | verdict | outside the provider call "
           "p50 / p99 |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for level, figures in p["levels"].items():
        target = "p50 ≤ 5 ms, p99 ≤ 25 ms" if level == "10" else ""
        ok = figures["p50_ms"] <= 5 and figures["p99_ms"] <= 25 if level == "10" else None
        out.append(f"| {level} | {fmt(figures['samples'])} | {fmt(figures['p50_ms'], ' ms')} | "
                   f"{fmt(figures['p99_ms'], ' ms')} | {target} | {verdict(ok) if target else ''} | "
                   f"{fmt(figures.get('outside_provider_call_p50_ms'))} / "
                   f"{fmt(figures.get('outside_provider_call_p99_ms'), ' ms')} |")
    return "\n".join(out)


def section_peer(p: dict[str, Any]) -> str:
    out = [header(p), f"The same fake provider, answering after {p['provider_latency_ms']} ms, reached four ways: "
           f"directly (the floor), through Luca's REST send and its OpenAI-compatible `/v1/chat/completions` "
           f"(gunicorn {p['luca_workers']}×{p['luca_threads']}, PostgreSQL, Redis, an RQ worker) and through "
           f"LiteLLM's proxy (`{p['litellm']}`, {p['luca_workers']} workers, no database, a master key) on the same "
           "request `/v1` gets. Each client keeps one connection and sends unique questions (Luca's REST send: "
           "`\"cache\": false`, in a conversation of its own per round; `/v1`: `Cache-Control: no-cache`, nothing "
           "stored but the usage record); rounds interleaved, their order rotated, so the machine's noise hits all "
           f"of them alike. Overhead = response time − {p['provider_latency_ms']} ms.\n",
           "| clients | direct p50 / p99 | Luca p50 / p99 | Luca /v1 p50 / p99 | LiteLLM p50 / p99 | "
           "Luca ÷ LiteLLM p50 / p99 | /v1 ÷ LiteLLM p50 / p99 | Luca − direct p50 | "
           "server CPU per answer, Luca / Luca /v1 / LiteLLM | samples each |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for level, f in p["levels"].items():
        f = {"luca_v1": {}, "luca_v1_over_litellm_p50": None, "luca_v1_over_litellm_p99": None, **f}  # runs before /v1
        cell = lambda n: f"{fmt(f[n].get('p50_ms'))} / {fmt(f[n].get('p99_ms'), ' ms')}"  # noqa: E731
        errors = sum(f[n].get("errors", 0) for n in ("direct", "luca", "luca_v1", "litellm"))
        out.append(f"| {level} | {cell('direct')} | {cell('luca')} | {cell('luca_v1')} | {cell('litellm')} | "
                   f"{f['luca_over_litellm_p50']} / {f['luca_over_litellm_p99']} | "
                   f"{f['luca_v1_over_litellm_p50']} / {f['luca_v1_over_litellm_p99']} | "
                   f"{fmt(f['luca_minus_direct_p50_ms'], ' ms')} | "
                   f"{fmt(f['luca'].get('server_cpu_ms_per_answer'))} / "
                   f"{fmt(f['luca_v1'].get('server_cpu_ms_per_answer'))} / "
                   f"{fmt(f['litellm'].get('server_cpu_ms_per_answer'), ' ms')} | {fmt(f['luca']['samples'])}"
                   f"{f' ({errors} errors)' if errors else ''} |")
    first = p["first_answer"]
    out += ["", "Server CPU: user + system time of gunicorn's processes (Luca; not PostgreSQL, Redis or the RQ "
            "worker) or of LiteLLM's, during the rounds, per answer served (Luca's also creates each client's "
            "conversation)."]
    out += ["", f"First answer after a start: {fmt(first['first_ms'], ' ms')} overhead against a warm p50 of "
            f"{fmt(first['warm_p50_ms'], ' ms')} ({first['first_over_warm']}×).", "",
            "| target | measured | verdict |", "| --- | --- | --- |"]
    out += [f"| {v['target']} | {fmt(v['figure'])} | {verdict(v['met'])} |" for v in p["verdicts"]]
    return "\n".join(out)


def section_concurrency(p: dict[str, Any]) -> str:
    names = list(next(iter(p["levels"].values())))
    out = [header(p), "Luca alone under several gunicorn settings (workers × threads), one at a time: each round "
           "starts every setting in turn (the order rotated) and measures both levels, with direct calls to the "
           f"provider between them as the floor; provider latency {p['provider_latency_ms']} ms; "
           "overhead p50 / p99.\n", "| clients | " + " | ".join(names) + " |",
           "| --- |" + " --- |" * len(names)]
    for level, figures in p["levels"].items():
        out.append(f"| {level} | " + " | ".join(f"{fmt(figures[n]['p50_ms'])} / {fmt(figures[n]['p99_ms'], ' ms')}"
                                                for n in names) + " |")
    return "\n".join(out)


def section_sendpath(p: dict[str, Any]) -> str:
    out = [header(p), f"{p['sends']} follow-up sends (`\"cache\": false`) through Flask's test client in a process "
           "of its own, production config (PostgreSQL, Redis, multiprocess metrics), provider answering at once "
           f"(a direct call to it: {fmt(p['direct_provider_ms'], ' ms')}). A send took "
           f"**{fmt(p['send_ms'], ' ms')}** ({fmt(p['send_ms_with_timers'], ' ms')} with the timers); time inside "
           "nested timed calls counts once, for the outermost.\n",
           "| phase | ms per send | timed calls per send |", "| --- | --- | --- |"]
    for phase, ms in p["phases_ms"].items():
        out.append(f"| {phase} | {fmt(ms)} | {fmt(p['timed_calls_per_send'].get(phase))} |")
    if "first_send_phases_ms" in p:
        out += ["", f"The first send after create_app took {fmt(p['first_send_ms'], ' ms')} (after one conversation "
                "was created, so the database and Redis pools were open):", "", "| phase | ms |", "| --- | --- |"]
        out += [f"| {phase} | {fmt(ms)} |" for phase, ms in p["first_send_phases_ms"].items()]
    out += ["", "Database time per send by statement (in the driver):", "",
            "| statement | ms per send |", "| --- | --- |"]
    out += [f"| {kind} | {fmt(ms)} |" for kind, ms in p["sql_cursor_ms_per_send"].items()]
    return "\n".join(out)


def section_throughput(p: dict[str, Any]) -> str:
    return "\n".join([header(p), f"wrk {p['wrk']}, {p['seconds']} s each, same gunicorn config.\n",
                      "| endpoint | requests/s |", "| --- | --- |",
                      f"| Luca, cached `GET /api/conversations` (auth included) | {fmt(p['luca_cached_list_rps'])} |",
                      f"| bare Flask, same JSON | {fmt(p['bare_flask_rps'])} |",
                      "", f"Ratio **{p['ratio']}** (target ≥ 0.7, {verdict(p['ratio'] >= 0.7)})."])


def section_deep(p: dict[str, Any]) -> str:
    s, h, r = p["sql"], p["http"], p["ratios"]
    return "\n".join([
        header(p), f"PostgreSQL, 100,000 conversations and 1,000,000 messages; the user owns 25,000 conversations, "
        f"the conversation 60,000 messages; medians of {p['runs']} runs.\n",
        "| list | page 1 | page 1,000 (cursor) | page 1,000 (OFFSET) | page 1,000 / page 1 | target | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| conversations, HTTP | {fmt(h['conversations_page1_ms'], ' ms')} | {fmt(h['conversations_page1000_ms'], ' ms')} | "
        f"| {r['conversations_http_page1000_over_page1']}× | ≤ 1.5× | "
        f"{verdict(r['conversations_http_page1000_over_page1'] <= 1.5)} |",
        f"| messages, HTTP | {fmt(h['messages_page1_ms'], ' ms')} | {fmt(h['messages_page1000_ms'], ' ms')} | "
        f"| {r['messages_http_page1000_over_page1']}× | ≤ 1.5× | {verdict(r['messages_http_page1000_over_page1'] <= 1.5)} |",
        f"| conversations, SQL | {fmt(s['conversations_page1_cursor_ms'], ' ms')} | "
        f"{fmt(s['conversations_page1000_cursor_ms'], ' ms')} | {fmt(s['conversations_page1000_offset_ms'], ' ms')} "
        f"| OFFSET {r['conversations_offset_over_cursor']}× the cursor | | |",
        f"| messages, SQL | {fmt(s['messages_page1_cursor_ms'], ' ms')} | {fmt(s['messages_page1000_cursor_ms'], ' ms')} "
        f"| {fmt(s['messages_page1000_offset_ms'], ' ms')} | OFFSET {r['messages_offset_over_cursor']}× the cursor | | |"])


def section_search(p: dict[str, Any]) -> str:
    ok = p["p95_ms"] <= 50
    return "\n".join([header(p), f"{fmt(p['queries'])} searches over {fmt(p['messages'])} messages through "
                      "`GET /api/search` (one- and two-word queries; a third of them by the user with the most "
                      "messages).\n", "| p50 | p95 | max | target | verdict |", "| --- | --- | --- | --- | --- |",
                      f"| {fmt(p['p50_ms'], ' ms')} | {fmt(p['p95_ms'], ' ms')} | {fmt(p['max_ms'], ' ms')} | "
                      f"p95 ≤ 50 ms | {verdict(ok)} |"])


def section_retrieval(p: dict[str, Any]) -> str:
    ok = p["p95_ms"] <= 20
    return "\n".join([header(p), f"{fmt(p['questions'])} questions, each one `retrieval.retrieve()` (the ranking query "
                      f"with `ts_rank_cd`, the passages, their message) over {fmt(p['chunks'])} chunks of "
                      f"{p['users']} users; a third of the questions in the busiest conversation "
                      f"({fmt(p['busiest_conversation_chunks'])} chunks). A question is two accounting words shared "
                      f"with many chunks and three rarer ones, plus two recent turns; {p['passages_mean']} passages "
                      "filled the budget on average.\n",
                      "| p50 | p95 | max | p95, busiest conversation | p95, the others (500 chunks) | target | verdict |",
                      "| --- | --- | --- | --- | --- | --- | --- |",
                      f"| {fmt(p['p50_ms'], ' ms')} | {fmt(p['p95_ms'], ' ms')} | {fmt(p['max_ms'], ' ms')} | "
                      f"{fmt(p['busiest_p95_ms'], ' ms')} | {fmt(p.get('others_p95_ms'), ' ms')} | p95 ≤ 20 ms | "
                      f"{verdict(ok)} |"])


def section_breaker(p: dict[str, Any]) -> str:
    ok = p["wall_over_latency"] < 1.5
    return "\n".join([header(p), "| answers | answer latency | wall time | wall / latency | provider saw at once "
                      "| target | verdict |", "| --- | --- | --- | --- | --- | --- | --- |",
                      f"| {p['answers']} | {p['answer_latency_ms']} ms | {fmt(p['wall_ms'], ' ms')} | "
                      f"{p['wall_over_latency']}× | {p['provider_max_concurrent']} | < 1.5× | {verdict(ok)} |"])


def section_dedup(p: dict[str, Any]) -> str:
    ok = p["provider_calls"] == p["minimum_calls"]
    return "\n".join([header(p), f"{p['distinct_questions']} distinct first questions, each asked by 10 users: 5 at "
                      "the same moment, then 5 one after another.\n",
                      "| requests | provider calls | minimum possible | target | verdict |", "| --- | --- | --- | --- | --- |",
                      f"| {p['requests']} | {p['provider_calls']} | {p['minimum_calls']} | exactly the minimum | "
                      f"{verdict(ok)} |"])


SECTIONS = [
    ("mix", "Before and after, on a realistic mix", section_mix),
    ("capacity", "Concurrent users held at p95 under 1 s", section_capacity),
    ("users10k", "10,000 simulated users", section_users10k),
    ("overhead", "Overhead Luca adds to an AI answer", section_overhead),
    ("peer", "Beside LiteLLM and a direct call", section_peer),
    ("concurrency", "Workers and threads at 10 and 50 clients", section_concurrency),
    ("sendpath", "The send path, phase by phase", section_sendpath),
    ("throughput", "Cached list throughput against bare Flask", section_throughput),
    ("deep", "Deep pages", section_deep),
    ("search", "Search over 1,000,000 messages", section_search),
    ("retrieval", "Retrieval over 100,000 document chunks", section_retrieval),
    ("breaker", "Breaker concurrency", section_breaker),
    ("dedup", "Deduplication", section_dedup),
]


def render(results: dict[str, Any], notes: str = "") -> str:
    """The whole document."""
    machine = results.get("machine", {})
    last = results.get("last_run", {})
    out = ["# Benchmarks", "",
           "Every figure here comes from the run named above its table, on the machine below, with its comparison "
           "measured in the same run. Rerun everything with `make bench` (about 15–25 minutes), or one part with "
           "`.venv/bin/python -m bench PART` (parts: " + ", ".join(f"`{k}`" for k, _, _ in SECTIONS) + "); add "
           "`--quick` for shorter, noisier runs. The stack is real: gunicorn with `gunicorn.conf.py` "
           "(`WEB_CONCURRENCY=2`, `GUNICORN_THREADS=32`), an RQ worker, PostgreSQL, Redis, and local "
           "OpenAI-compatible providers in their own processes; load comes from other processes (locust, wrk) "
           "or client threads of the bench process, on loopback.", "",
           f"Machine: {machine.get('cpus', '?')} CPUs ({machine.get('cpu', '?')}), {machine.get('memory', '?')} "
           f"memory, Python {machine.get('python', '?')}, {machine.get('postgresql', '?')}, "
           f"{machine.get('redis', '?')}, Linux {machine.get('kernel', '?')}. Everything — server, database, Redis, "
           "providers and load generator — shares those CPUs, so figures are lower than on a dedicated server and "
           "vary between runs; ratios from one run are the figures to trust.", "",
           f"Last run: `{last.get('command', '?')}` at {last.get('at', '?')} ({last.get('seconds', '?')} s).", ""]
    for key, title, section in SECTIONS:
        out += [f"## {title}", ""]
        part = results["parts"].get(key)
        out += [section(part) if part else "_Not measured yet._", ""]
    if notes:
        out += [notes.strip(), ""]
    return "\n".join(out)
