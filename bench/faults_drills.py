"""The five fault drills. Each starts a Stack of its own, drives load at it, breaks one part, and reports.

A drill's report says what was sent, what came back (status counts), and what was lost: work the
API acknowledged (a 2xx) that the database does not show finished by the deadline. Lost must be
0, and each drill has its own conditions besides (no 5xx, fast 503s, a breaker that opened and
closed ...). Every drill takes a Profile: FULL (the real lengths) or FAST (the test suite's).
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Self

from bench.client import Client
from bench.faults_load import (
    Load,
    Outcome,
    Recorder,
    Session,
    ask,
    csv_document,
    list_conversations,
    new_conversation,
    upload,
)
from bench.faults_stack import Stack
from tests.support.documents import heavy_pdf
from tests.support.processes import wait_until

# Requests that wait for a database connection may take the connect timeout plus this much.
LATENCY_MARGIN = 1.0
WORKER_SURVIVED = "the worker survived the Redis outage (no restart by the supervisor)"
ONLY_503 = "every failure was a 503 (no 500, no hung or dropped request)"


@dataclass(frozen=True)
class Profile:
    """How long each phase of the drills lasts, and how much work they send."""

    name: str
    warmup: float  # load before the fault
    outage: float  # Redis and PostgreSQL down
    provider_outage: float  # the primary provider answering 500
    recovery: float  # load after the fault is over (and, for PostgreSQL, after service came back)
    ai_breaker_reset: float  # AI_BREAKER_RESET_TIMEOUT
    db_breaker_reset: float  # DB_BREAKER_RESET_TIMEOUT
    files: int  # heavy PDFs in the worker drill
    pages: int  # pages of each (about 0.3 s of extraction a page)
    hups: int  # SIGHUPs to gunicorn
    hup_every: float
    threads: int  # concurrent HTTP clients
    settle: float  # the most to wait for background work to finish afterwards


FULL = Profile("full", warmup=5, outage=10, provider_outage=60, recovery=5, ai_breaker_reset=10,
               db_breaker_reset=10, files=8, pages=10, hups=5, hup_every=3, threads=8, settle=120)
FAST = Profile("fast", warmup=2, outage=4, provider_outage=6, recovery=2, ai_breaker_reset=2,
               db_breaker_reset=2, files=4, pages=6, hups=3, hup_every=1, threads=6, settle=60)


@dataclass
class Report:
    """What a drill sent, what came back, what was lost, and whether its conditions held."""

    drill: str
    title: str
    sent: int
    statuses: Counter[str]
    lost: int
    tracked: int
    tracked_what: str
    fault_latency: float
    checks: dict[str, bool]
    notes: list[str] = field(default_factory=list)
    logs: str = ""

    @property
    def passed(self) -> bool:
        """Nothing lost and every condition held."""
        return self.lost == 0 and all(self.checks.values())

    @property
    def verdict(self) -> str:
        """PASS or FAIL."""
        return "PASS" if self.passed else "FAIL"

    def status_text(self) -> str:
        """Status counts, e.g. `201:310 202:40 503:12`."""
        return " ".join(f"{status}:{count}" for status, count in sorted(self.statuses.items()))

    def describe(self, with_logs: bool = True) -> str:
        """The drill's full account, with the processes' logs when it failed."""
        lines = [f"== {self.drill}: {self.title}",
                 f"   sent:     {self.sent} requests",
                 f"   statuses: {self.status_text()}",
                 f"   lost:     {self.lost}/{self.tracked} ({self.tracked_what})",
                 f"   max latency during the fault: {self.fault_latency:.2f} s"]
        lines += [f"   note: {note}" for note in self.notes]
        lines += [f"   [{'ok' if held else 'FAILED'}] {check}" for check, held in self.checks.items()]
        lines.append(f"   {self.verdict}")
        if with_logs and not self.passed and self.logs:
            lines.append(self.logs)
        return "\n".join(lines)


# -- shared pieces ---------------------------------------------------------------------------------------
@contextmanager
def load(stack: Stack, rec: Recorder, session: Session, profile: Profile, pause: float = 0.05,
         keep_alive: bool = False) -> Iterator[Load]:
    """Drive `session` at the stack's gunicorn from profile.threads clients until the block ends."""
    clients = [Client(stack.web.base, stack.token, keep_alive=keep_alive)]
    with Load(session, clients, rec, threads=profile.threads, pause=pause, limit=900) as running:
        yield running
    rec.mark("load stopped")
    if running.errors:
        raise RuntimeError(f"the load itself failed: {running.errors[:3]}")


def count_where(stack: Stack, table: str, ids: list[Any], condition: str = "TRUE") -> int:
    """How many of the rows with these ids exist in table and meet condition."""
    if not ids:
        return 0
    cast = "::uuid[]" if table == "conversations" else "::bigint[]"
    rows = stack.postgres.query(f"SELECT count(*) FROM {table} WHERE id = ANY(%s{cast}) AND {condition}",
                                [str(i) for i in ids])
    return int(rows[0][0])


def missing(stack: Stack, table: str, ids: list[Any], condition: str = "TRUE") -> int:
    """How many of these acknowledged ids the database does not show (meeting condition)."""
    return len(set(ids)) - count_where(stack, table, list(set(ids)), condition)


def eventually(check: Callable[[], Any], timeout: float, every: float = 0.1) -> bool:
    """Whether check() turns true within timeout (polled every `every` seconds)."""
    try:
        wait_until(check, timeout, "the condition", every)
    except TimeoutError:
        return False
    return True


def settle(unfinished: Callable[[], int], timeout: float) -> int:
    """Poll unfinished() until it is 0 or the time is up; return the last count."""
    deadline = time.monotonic() + timeout
    while (left := unfinished()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def wait_for_clean_stretch(rec: Recorder, since: float, seconds: float, timeout: float) -> float | None:
    """Wait until `seconds` pass with every request answered 2xx (after `since`); return when that began."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recent = [o for o in rec.between(since, rec.now()) if o.start >= since]
        failures = [o.end for o in recent if not o.ok]
        clean_from = max(failures, default=since)
        if rec.now() - clean_from >= seconds and any(o.ok and o.start >= clean_from for o in recent):
            return clean_from
        time.sleep(0.2)
    return None


def fault_latency(rec: Recorder, start: str = "fault", end: str = "restored") -> float:
    """The longest request that was in flight during the fault."""
    return max((o.seconds for o in rec.between(rec.marks[start], rec.marks[end])), default=0.0)


def failures(outcomes: list[Outcome]) -> list[Outcome]:
    """Requests that got no 2xx."""
    return [o for o in outcomes if not o.ok]


def all_answered(rec: Recorder) -> bool:
    """Every request got a 2xx."""
    return not failures(rec.outcomes)


def no_server_errors(rec: Recorder) -> bool:
    """No 5xx and no request without an answer (connection refused, reset, timed out)."""
    return not [o for o in rec.outcomes if o.status == 0 or o.status >= 500]


def make_report(drill: str, title: str, stack: Stack, rec: Recorder, lost: dict[str, int],
                tracked: dict[str, int], checks: dict[str, bool], notes: list[str] | None = None) -> Report:
    """Assemble a drill's report (every drill also checks gunicorn's workers); lost and tracked are per kind."""
    troubles = stack.web.troubles()
    checks = {**checks, "no gunicorn worker timed out, crashed or was killed": not troubles}
    notes = [*(notes or []), *(f"gunicorn: {line}" for line in troubles[:5])]
    report = Report(drill, title, len(rec.outcomes), rec.statuses(), sum(lost.values()), sum(tracked.values()),
                    ", ".join(f"{kind} {lost[kind]}/{tracked[kind]}" for kind in tracked),
                    fault_latency(rec) if "restored" in rec.marks else 0.0, checks, notes)
    if not report.passed:
        report.logs = stack.logs()
    return report


def questions_lost(stack: Stack, rec: Recorder) -> tuple[dict[str, int], dict[str, int]]:
    """Acknowledged conversations and messages (questions and answers) missing from the database."""
    conversations, messages = rec.acknowledged("conversations"), rec.acknowledged("messages")
    lost = {"conversations": missing(stack, "conversations", conversations),
            "messages": missing(stack, "messages", messages)}
    return lost, {"conversations": len(set(conversations)), "messages": len(set(messages))}


def chat(client: Client, rec: Recorder, questions: int = 1, listing: bool = True) -> None:
    """A session: a named conversation, some questions, the conversation list."""
    conversation = new_conversation(client, rec, title="Fault drill")
    for _ in range(questions if conversation else 0):
        ask(client, rec, conversation)
    if listing:
        list_conversations(client, rec)


# -- 1. Redis killed -----------------------------------------------------------------------------------
def new_chat_with_documents(client: Client, rec: Recorder, counter: Iterator[int], upload_every: int = 3) -> None:
    """A session: a new conversation Luca must name, one question, and every few sessions a CSV upload."""
    conversation = new_conversation(client, rec)
    if conversation is None:
        return
    if ask(client, rec, conversation):
        rec.acknowledge("answered", conversation)
    if next(counter) % upload_every == 0:
        upload(client, rec, conversation, "ledger.csv", csv_document())


def redis_killed(profile: Profile = FULL) -> Report:
    """Redis killed -9 under load and restarted later: no 5xx, every title and file still done.

    A worker that exits is restarted after a second, as the deployments' supervisors do (systemd's
    Restart=always, Heroku, Render); the drill counts such restarts as a failed condition.
    """
    with Stack("redis", supervise=True) as stack:
        rec = Recorder()
        session = partial(new_chat_with_documents, counter=itertools.count())
        # About as many new conversations a second as one worker names while the web serves them.
        with load(stack, rec, session, replace(profile, threads=3), pause=1.0):
            time.sleep(profile.warmup)
            # The harder moment: while the worker runs a job (RQ watches its work horse through Redis).
            mid_job = eventually(stack.jobs_running, 10, every=0.01)
            rec.mark("fault")
            stack.redis.kill()
            time.sleep(profile.outage)
            stack.redis.restart()
            rec.mark("restored")
            time.sleep(profile.recovery)
        work = {"untitled conversations": ("conversations", rec.acknowledged("answered"), "title IS NOT NULL"),
                "files not ready": ("files", rec.acknowledged("files"), "status = 'ready'")}

        def unfinished() -> dict[str, int]:
            return {kind: missing(stack, table, ids, done) for kind, (table, ids, done) in work.items()}

        settle(lambda: sum(unfinished().values()), profile.settle)
        asks = [o for o in rec.outcomes if o.op == "ask"]
        checks = {
            "no 5xx and no unanswered request during the whole drill": no_server_errors(rec),
            "every question answered (201)": bool(asks) and all(o.status == 201 for o in asks),
            "questions were answered while Redis was down (their titles left for the reconciler)":
                any(rec.marks["fault"] < o.start and o.end < rec.marks["restored"] for o in asks),
            WORKER_SURVIVED: not stack.supervisor.restarts,
        }
        rounds = sum(worker.output().count("[Reconciler] enqueued") for worker in stack.workers)
        notes = [f"killed while a job was running: {'yes' if mid_job else 'no'}",
                 f"reconciler rounds that enqueued work: {rounds}"]
        notes += [f"supervisor: {restart}" for restart in stack.supervisor.restarts]
        return make_report("redis-killed", f"Redis killed -9 under load, restarted {profile.outage:g} s later",
                           stack, rec, unfinished(), {kind: len(set(ids)) for kind, (_, ids, _) in work.items()},
                           checks, notes)


# -- 2. PostgreSQL stopped -----------------------------------------------------------------------------
def postgres_stopped(profile: Profile = FULL) -> Report:
    """PostgreSQL down under load: fast 503s, every acknowledged write kept, service back by itself."""
    settings = {"DB_BREAKER_RESET_TIMEOUT": str(profile.db_breaker_reset)}
    with Stack("postgres", settings) as stack:
        rec = Recorder()
        connect_timeout = float(stack.settings["DATABASE_CONNECT_TIMEOUT"])
        with load(stack, rec, partial(chat, questions=2), profile):
            time.sleep(profile.warmup)
            rec.mark("fault")
            stack.postgres.kill()
            time.sleep(profile.outage)
            stack.postgres.start()
            rec.mark("restored")
            clean_from = wait_for_clean_stretch(rec, rec.marks["restored"], profile.recovery,
                                                timeout=3 * profile.db_breaker_reset + 30)
        during = rec.between(rec.marks["fault"], rec.marks["restored"])
        unexpected = [o for o in failures(rec.outcomes) if o.status != 503]
        lost, tracked = questions_lost(stack, rec)
        client = Client(stack.web.base, stack.token, keep_alive=False)
        final = [client.call("GET", "/api/conversations?limit=5").status for _ in range(10)]
        checks = {
            "requests failed while PostgreSQL was down (the fault was felt)": bool(failures(during)),
            ONLY_503: not unexpected,
            f"no request took longer than the connect timeout + {LATENCY_MARGIN:g} s during the outage":
                fault_latency(rec) < connect_timeout + LATENCY_MARGIN,
            "service came back by itself (a clean stretch of 2xx after the restart)": clean_from is not None,
            "10 requests after the drill: all 200": final == [200] * 10,
        }
        notes = [f"back {clean_from - rec.marks['restored']:.1f} s after PostgreSQL started"
                 if clean_from is not None else "service did not come back",
                 f"while down: {dict(rec.statuses(during))}"]
        if unexpected:
            notes.append(f"unexpected: {dict(rec.statuses(unexpected))}")
        return make_report("postgres-stopped", f"PostgreSQL stopped (immediate) for {profile.outage:g} s under load",
                           stack, rec, lost, tracked, checks, notes)


# -- 3. a provider down ----------------------------------------------------------------------------------
class BreakerWatch:
    """Polls /api/admin/breakers in a thread and keeps every state an AI breaker was seen in, in order."""

    def __init__(self, client: Client, name: str, every: float = 0.2) -> None:
        self.client, self.name, self.every = client, name, every
        self.states: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="breaker-watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            reply = self.client.call("GET", "/api/admin/breakers")
            state = ((reply.body or {}).get("aiProviders", {}).get(self.name) or {}).get("state")
            if state and (not self.states or self.states[-1] != state):
                self.states.append(state)

    def opened_and_closed(self) -> bool:
        """Whether it was seen open, and closed at some point after that."""
        return "open" in self.states and "closed" in self.states[self.states.index("open"):]

    def __enter__(self) -> Self:
        """Start watching."""
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop watching."""
        self._stop.set()
        self._thread.join(timeout=10)


def provider_down(profile: Profile = FULL) -> Report:
    """The primary provider answers 500 for a while: backup answers, AI-primary opens, then closes again."""
    settings = {"AI_BREAKER_RESET_TIMEOUT": str(profile.ai_breaker_reset)}
    with Stack("provider", settings) as stack:
        rec = Recorder()
        watch = BreakerWatch(Client(stack.web.base, stack.token, keep_alive=False), "AI-primary")
        with watch, load(stack, rec, partial(chat, questions=1, listing=False), profile):
            time.sleep(profile.warmup)
            rec.mark("fault")
            stack.primary.configure(status=500)
            time.sleep(profile.provider_outage)
            stack.primary.configure(status=None)
            rec.mark("restored")
            closed = eventually(watch.opened_and_closed, 3 * profile.ai_breaker_reset + 30)
            time.sleep(profile.recovery)
        asks = [o for o in rec.outcomes if o.op == "ask"]
        by_phase = {phase: Counter(o.provider for o in asks if start <= o.start < end) for phase, start, end in
                    (("during", rec.marks["fault"], rec.marks["restored"]),
                     ("after", rec.marks["restored"], rec.marks["load stopped"]))}
        log = stack.web.output()
        lost, tracked = questions_lost(stack, rec)
        checks = {
            "every request answered 2xx (no user-visible error)": all_answered(rec),
            "backup answered during the outage": by_phase["during"]["backup"] > 0,
            "AI-primary seen open, then closed (admin API)": closed and watch.opened_and_closed(),
            "gunicorn logged [CircuitBreaker] AI-primary OPEN and CLOSED":
                "[CircuitBreaker] AI-primary OPEN" in log and "[CircuitBreaker] AI-primary CLOSED" in log,
            "primary answers again afterwards": by_phase["after"]["primary"] > 0,
        }
        transitions = {state: log.count(f"[CircuitBreaker] AI-primary {state}") for state in
                       ("OPEN", "HALF-OPEN", "CLOSED")}
        notes = [f"AI-primary states seen through the admin API: {' -> '.join(watch.states)}",
                 f"AI-primary transitions in gunicorn's log: {transitions}",
                 f"answers by provider during the outage: {dict(by_phase['during'])}, after: {dict(by_phase['after'])}",
                 (f"primary answered 500 to {stack.primary.stats()['by_status'].get('500', 0)} calls "
                  "(the others were skipped by the open breaker)")]
        return make_report("provider-down", f"primary provider answering 500 for {profile.provider_outage:g} s",
                           stack, rec, lost, tracked, checks, notes)


# -- 4. a worker killed mid-job ------------------------------------------------------------------------
def watch_files(client: Client, rec: Recorder) -> None:
    """A session: read the status of every uploaded file."""
    for file_id in rec.acknowledged("files"):
        rec.request(client, "status", "GET", f"/api/files/{file_id}")


def processing_file(stack: Stack, files: list[int]) -> int | None:
    """A file being extracted right now, past its first page."""
    rows = stack.postgres.query("SELECT id FROM files WHERE id = ANY(%s::bigint[]) AND status = 'processing' "
                                "AND progress > 0 LIMIT 1", [str(f) for f in files])
    return rows[0][0] if rows else None


def upload_all(stack: Stack, rec: Recorder, profile: Profile) -> list[int]:
    """Upload profile.files heavy PDFs at once, from as many clients."""
    client = Client(stack.web.base, stack.token, keep_alive=False)
    conversation = new_conversation(client, rec, title="Annual reports")
    assert conversation, "could not create the conversation for the documents"
    document = heavy_pdf(profile.pages)
    threads = [threading.Thread(target=upload, args=(client, rec, conversation, f"annual-{n}.pdf", document))
               for n in range(profile.files)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return rec.acknowledged("files")


def worker_killed(profile: Profile = FULL) -> Report:
    """An RQ worker and its work horse SIGKILLed mid-extraction: a new worker finishes every file."""
    with Stack("worker", worker=False) as stack:
        rec = Recorder()
        files = upload_all(stack, rec, profile)
        with load(stack, rec, watch_files, replace(profile, threads=2), pause=0.2):
            first = stack.start_worker("--no-reconcile")
            first.ready()
            victim = wait_until(lambda: processing_file(stack, files), 60, "a file being processed")
            rec.mark("fault")
            first.kill()
            status = stack.postgres.query("SELECT status FROM files WHERE id = %s", victim)[0][0]
            second = stack.start_worker(JOBS_STALE_AFTER="3", JOBS_RECONCILE_INTERVAL="1", JOBS_RECONCILE_GRACE="1")
            second.ready()
            rec.mark("restored")
            left = settle(lambda: missing(stack, "files", files, "status = 'ready'"), profile.settle)
        lost = {"files not ready": missing(stack, "files", files, "status = 'ready'")}
        checks = {
            f"all {profile.files} uploads acknowledged (202)": len(files) == profile.files,
            "the kill landed mid-job (the file was still processing)": status == "processing",
            "the killed worker is gone": not first.running(),
            "the new worker ran the killed job again": f"process_file({victim})" in second.output(),
            "the new worker finished every file": left == 0,
            "every request answered 2xx": all_answered(rec),
        }
        notes = [f"killed worker {first.pid} and its work horse while file {victim} was processing"]
        return make_report("worker-killed", f"RQ worker SIGKILLed mid-job ({profile.files} PDFs of "
                           f"{profile.pages} pages)", stack, rec, lost, {"files not ready": len(files)}, checks, notes)


# -- 5. gunicorn workers restarted -------------------------------------------------------------------
def hup_and_wait(stack: Stack) -> bool:
    """SIGHUP gunicorn; wait until none of the old workers is left and a full set of new ones serves."""
    old = stack.web.worker_pids()
    stack.web.hup()

    def replaced() -> bool:
        current = stack.web.worker_pids()
        return not current & old and len(current) == stack.web_workers

    return eventually(replaced, 40)


def gunicorn_hup(profile: Profile = FULL) -> Report:
    """SIGHUP to gunicorn's master, several times, under load: every request answered 2xx.

    The clients keep their connections alive, so a request sent on a connection to a worker that
    is shutting down must be answered too.
    """
    with Stack("hup") as stack:
        rec = Recorder()
        replaced = []
        with load(stack, rec, partial(chat, questions=1), profile, keep_alive=True):
            time.sleep(profile.warmup)
            rec.mark("fault")
            for _ in range(profile.hups):
                replaced.append(hup_and_wait(stack))
                time.sleep(profile.hup_every)
            rec.mark("restored")
            time.sleep(profile.recovery)
        lost, tracked = questions_lost(stack, rec)
        booted = stack.web.output().count("Booting worker")
        checks = {
            "every request answered 2xx": all_answered(rec),
            f"each of the {profile.hups} HUPs replaced every worker": all(replaced) and len(replaced) == profile.hups,
            "the master is still running": stack.web.running(),
        }
        notes = [f"{booted} workers booted in all ({stack.web_workers} at start)"]
        return make_report("gunicorn-hup", f"SIGHUP to gunicorn x{profile.hups} under load", stack, rec, lost,
                           tracked, checks, notes)


DRILLS: dict[str, Callable[[Profile], Report]] = {
    "redis": redis_killed,
    "postgres": postgres_stopped,
    "provider": provider_down,
    "worker": worker_killed,
    "hup": gunicorn_hup,
}

__all__ = ["DRILLS", "FAST", "FULL", "Profile", "Report", "gunicorn_hup", "postgres_stopped",
           "provider_down", "redis_killed", "worker_killed"]
