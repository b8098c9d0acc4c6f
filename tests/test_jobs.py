"""Background jobs with a real RQ worker process, real Redis and the real database; and without Redis."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from rq.job import Job, Retry
from rq.registry import FailedJobRegistry

from luca.extensions import db, jobs
from luca.jobs.queue import InProcessJob, job_id
from luca.jobs.reconcile import reconcile
from luca.jobs.tasks import generate_title
from tests.support import ROOT
from tests.support.api import file_status, multipart, signed, upload
from tests.support.apps import conversation_row, provider_overrides
from tests.support.documents import encrypt_pdf, heavy_pdf, make_docx, make_docx_bomb, make_pdf, make_xlsx
from tests.support.jobs import Stack


def test_a_real_worker_sets_the_title_and_the_list_shows_it_at_once(stack: Stack, servers) -> None:
    api = signed(stack.app)
    conversation = api.new_conversation(title=None)
    api.ask(conversation["id"], "How do I depreciate a delivery van?")
    listing = api.get("/api/conversations").get_json()["items"]
    assert listing[0]["title"] is None
    assert api.get("/api/conversations").headers["X-Cache"] == "hit"
    result = stack.worker()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[TitleQueue] Processing job" in result.stderr + result.stdout
    title = api.get("/api/conversations").get_json()["items"][0]["title"]
    assert title and title.startswith("[primary]") and len(title) <= 60
    detail = api.get(f"/api/conversations/{conversation['id']}").get_json()
    assert detail["title"] == title and detail["title_set_by_user"] is False
    assert detail["metadata"].get("summary")


def test_a_user_rename_during_the_title_job_wins(stack: Stack, servers) -> None:
    primary, _ = servers
    api = signed(stack.app)
    conversation = api.new_conversation(title=None)
    api.ask(conversation["id"], "What is a trial balance?")
    primary.configure(latency_ms=1500)
    worker = stack.start_worker()
    try:
        deadline = time.monotonic() + 30
        while primary.stats()["active"] == 0:  # the title job is now waiting for its provider
            assert time.monotonic() < deadline, "the title job never called the provider"
            time.sleep(0.05)
        api.patch(f"/api/conversations/{conversation['id']}", json={"title": "My own name"})
        while primary.stats()["completed"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    assert api.get("/api/conversations").get_json()["items"][0]["title"] == "My own name"
    row = conversation_row(stack.app, conversation["id"])
    assert (row.title, row.title_set_by_user) == ("My own name", True)


@pytest.mark.slow
def test_a_priority_job_enqueued_behind_fifty_waiting_jobs_runs_first(stack: Stack) -> None:
    api = signed(stack.app)
    with stack.app.app_context():
        waiting = [api.new_conversation(title=f"named {i}")["id"] for i in range(50)]
        for conversation_id in waiting:
            jobs.enqueue("titles", generate_title, conversation_id, job_id=f"title-{conversation_id}")
        urgent = api.new_conversation(title=None)["id"]
        jobs.enqueue("titles", generate_title, urgent, job_id=f"title-{urgent}", priority=1)
        queue = jobs.queue("titles")
        assert queue.count == 51 and queue.job_ids[0] == f"{stack.prefix}title-{urgent}"
    result = stack.worker()
    assert result.returncode == 0, result.stderr
    connection = stack.redis.client
    started = {job_id: Job.fetch(f"{stack.prefix}title-{job_id}", connection=connection).started_at
               for job_id in [*waiting, urgent]}
    assert started[urgent] < min(started[c] for c in waiting)


def test_a_title_job_succeeds_on_its_third_try(stack: Stack, servers) -> None:
    primary, _ = servers
    api = signed(stack.app)
    conversation = api.new_conversation(title=None)
    api.ask(conversation["id"], "Explain deferred revenue")
    primary.configure(fail_next=2, fail_status=503)
    result = stack.worker()
    assert result.returncode == 0, result.stderr
    assert conversation_row(stack.app, conversation["id"]).title.startswith("[primary]")
    with stack.app.app_context():
        stats = jobs.stats()["titleGeneration"]
    assert (stats["retried"], stats["completed"], stats["failed"]) == (2, 1, 0)


def test_a_title_job_that_always_fails_lands_in_the_failed_registry_with_a_fallback_title(stack: Stack,
                                                                                         servers) -> None:
    primary, _ = servers
    api = signed(stack.app)
    conversation = api.new_conversation(title=None)
    api.ask(conversation["id"], "Which invoices must I keep and for how long?")
    primary.configure(status=500)
    result = stack.worker()
    assert result.returncode == 0, result.stderr
    with stack.app.app_context():
        failed = FailedJobRegistry(queue=jobs.queue("titles"))
        stats = jobs.stats()["titleGeneration"]
    assert failed.get_job_ids() == [f"{stack.prefix}title-{conversation['id']}"]
    assert stats["failed"] == 1 and stats["inFailedRegistry"] == 1 and stats["failureRate"] == 1.0
    assert conversation_row(stack.app, conversation["id"]).title == "Which invoices must I keep and for how long"


DOCUMENTS: dict[str, Callable[[], bytes]] = {
    "report.pdf": lambda: make_pdf(["Revenue grew by 12 percent", "Net margin was 7 percent"]),
    "notes.docx": make_docx,
    "ledger.xlsx": make_xlsx,
    "trial.csv": lambda: b"account,debit,credit\ncash,100,0\nsales,0,100\n",
}


def test_real_documents_are_extracted_by_the_worker(stack: Stack) -> None:
    api = signed(stack.app)
    conversation = api.new_conversation()
    uploaded = {name: upload(api, conversation["id"], name, make())["id"] for name, make in DOCUMENTS.items()}
    result = stack.worker()
    assert result.returncode == 0, result.stderr
    statuses = {name: file_status(api, file_id) for name, file_id in uploaded.items()}
    assert {name: s["status"] for name, s in statuses.items()} == dict.fromkeys(DOCUMENTS, "ready")
    assert {name: s["kind"] for name, s in statuses.items()} == {
        "report.pdf": "pdf", "notes.docx": "docx", "ledger.xlsx": "xlsx", "trial.csv": "csv"}
    assert statuses["report.pdf"]["pages"] == 2 and statuses["report.pdf"]["progress"] == 100


def test_broken_encrypted_and_hostile_documents_end_failed_and_the_worker_survives(stack: Stack) -> None:
    api = signed(stack.app)
    conversation = api.new_conversation()
    pdf = make_pdf(["Confidential figures"])
    bad = {"truncated.pdf": pdf[: len(pdf) // 2], "locked.pdf": encrypt_pdf(pdf, "secret"),
           "bomb.docx": make_docx_bomb()}
    uploaded = {name: upload(api, conversation["id"], name, data)["id"] for name, data in bad.items()}
    good = upload(api, conversation["id"], "after.csv", b"a,b\n1,2\n3,4\n")["id"]
    result = stack.worker()
    assert result.returncode == 0, result.stderr
    for name, file_id in uploaded.items():
        status = file_status(api, file_id)
        assert status["status"] == "failed", (name, status)
        assert status["error"]
    assert "password" in file_status(api, uploaded["locked.pdf"])["error"].lower()
    assert file_status(api, good)["status"] == "ready"


def test_extracted_text_becomes_context_for_the_next_question(stack: Stack, servers) -> None:
    primary, _ = servers
    api = signed(stack.app)
    conversation = api.new_conversation()
    upload(api, conversation["id"], "figures.csv", b"item,amount\nwidget sales,98765\n")
    stack.worker()
    api.ask(conversation["id"], "What were widget sales?")
    sent = primary.requests[-1]["messages"]
    assert any(m["role"] == "system" and "98765" in m["content"] and "figures.csv" in m["content"] for m in sent)


def test_a_question_with_a_file_is_never_answered_from_another_users_cache(stack: Stack, servers) -> None:
    primary, _ = servers
    alice, bob = signed(stack.app, "alice@example.com"), signed(stack.app, "bob@example.com")
    alice.ask(alice.new_conversation()["id"], "Summarise my document")
    conversation = bob.new_conversation()
    upload(bob, conversation["id"], "private.csv", b"salary,name\n100000,bob\n")
    answer = bob.ask(conversation["id"], "Summarise my document").get_json()["answer"]
    assert answer["cached"] is False
    assert len([r for r in primary.requests if r["messages"][-1]["content"] == "Summarise my document"]) == 2


@pytest.mark.slow
def test_work_enqueued_while_redis_is_down_is_finished_by_the_reconciler(stack: Stack, app_factory) -> None:
    web = app_factory(**{**stack.settings, "REDIS_URL": "redis://127.0.0.1:1/0"})  # Redis is down for the web
    api = signed(web)
    conversation = api.new_conversation(title=None)
    assert api.ask(conversation["id"], "What is working capital?").status_code == 201
    file_id = upload(api, conversation["id"], "x.csv", b"a,b\n1,2\n3,4\n")["id"]
    assert file_status(api, file_id)["status"] == "pending"
    with stack.app.app_context():
        assert jobs.queue("titles").count == 0  # nothing reached Redis

    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "jobs", "reconcile"], cwd=ROOT,
                            env={**stack.env, "JOBS_RECONCILE_GRACE": "0"}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "1 titles" in result.stdout and "1 files" in result.stdout
    assert stack.worker().returncode == 0
    assert conversation_row(stack.app, conversation["id"]).title
    assert file_status(api, file_id)["status"] == "ready"


@pytest.mark.slow
def test_a_worker_killed_mid_job_leaves_a_file_that_still_ends_ready(stack: Stack) -> None:
    api = signed(stack.app)
    conversation = api.new_conversation()
    # Heavy pages take about 0.3 s each to parse, so the kill lands mid-job.
    file_id = upload(api, conversation["id"], "annual.pdf", heavy_pdf(10))["id"]
    worker = subprocess.Popen([sys.executable, "worker.py", "--no-reconcile"], cwd=ROOT, env=stack.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while file_status(api, file_id)["status"] != "processing":
            assert time.monotonic() < deadline, "the worker never started the file"
            time.sleep(0.05)
    finally:
        # The work horse (RQ forks one per job, in a session of its own) first, then the worker.
        subprocess.run(["pkill", "-KILL", "-P", str(worker.pid)], check=False)
        worker.kill()
        worker.wait()
    time.sleep(0.3)
    assert file_status(api, file_id)["status"] == "processing"

    time.sleep(1.1)
    stack.app.config["JOBS_STALE_AFTER"] = 1
    assert reconcile(stack.app)["files"] == 1
    assert stack.worker().returncode == 0
    assert file_status(api, file_id)["status"] == "ready"


def test_without_redis_title_and_file_jobs_complete_in_process(app_factory, servers) -> None:
    primary, _ = servers
    app = app_factory(**provider_overrides(primary, JOBS_RETRY_BACKOFF=0))
    api = signed(app)
    conversation = api.new_conversation(title=None)
    api.ask(conversation["id"], "What is an accrual?")
    file_id = upload(api, conversation["id"], "x.csv", b"a,b\n1,2\n3,4\n")["id"]
    with app.app_context():
        assert jobs.mode == "thread"
        jobs.close()  # wait for the pool
    assert conversation_row(app, conversation["id"]).title.startswith("[primary]")
    assert file_status(api, file_id)["status"] == "ready"


def test_disable_queues_runs_jobs_before_the_request_returns(app_factory, servers) -> None:
    primary, _ = servers
    app = app_factory(**provider_overrides(primary, DISABLE_QUEUES=True))
    api = signed(app)
    conversation = api.new_conversation(title=None)
    api.ask(conversation["id"], "What is a balance sheet?")
    assert conversation_row(app, conversation["id"]).title.startswith("[primary]")
    file_id = upload(api, conversation["id"], "x.csv", b"a,b\n1,2\n3,4\n")["id"]
    assert file_status(api, file_id)["status"] == "ready"
    with app.app_context():
        assert jobs.mode == "inline"


def test_in_process_title_jobs_are_retried_as_rq_retries_them(app_factory, servers) -> None:
    primary, _ = servers
    app = app_factory(**provider_overrides(primary, DISABLE_QUEUES=True, JOBS_RETRY_BACKOFF=0))
    api = signed(app)
    conversation = api.new_conversation(title=None)
    api.ask(conversation["id"], "What is a balance sheet?")
    api.patch(f"/api/conversations/{conversation['id']}", json={"title": None})  # Luca names it again
    primary.configure(fail_next=2, fail_status=503)
    with app.app_context():
        before = jobs.stats()["titleGeneration"]
        jobs.enqueue("titles", generate_title, conversation["id"], job_id=job_id("titles", conversation["id"]))
        after = jobs.stats()["titleGeneration"]
    assert (after["retried"] - before["retried"], after["completed"] - before["completed"], after["failed"]) == \
        (2, 1, 0)
    assert conversation_row(app, conversation["id"]).title.startswith("[primary]")


def test_in_process_retries_wait_as_rq_retry_says() -> None:
    job = InProcessJob.of(Retry(max=3, interval=[5, 20]))
    waits = []
    while job.should_retry:
        waits.append(job.get_retry_interval())
        job.retries_left -= 1
    assert waits == [5, 5, 20]  # RQ's rule: with more retries than intervals, the first is used again
    assert not InProcessJob.of(None).should_retry


def test_files_of_other_users_are_404(stack: Stack) -> None:
    alice, bob = signed(stack.app, "alice@example.com"), signed(stack.app, "bob@example.com")
    conversation = alice.new_conversation()
    file_id = upload(alice, conversation["id"], "x.csv", b"a,b\n1,2\n")["id"]
    assert bob.get(f"/api/files/{file_id}").status_code == 404
    assert bob.get(f"/api/conversations/{conversation['id']}/files").status_code == 404
    body, content_type = multipart({"file": ("x.txt", b"x")})
    response = bob.client.post(f"/api/conversations/{conversation['id']}/files", headers=bob.headers(),
                               data=body, content_type=content_type)
    assert response.status_code == 404


@pytest.mark.parametrize("case", ["json", "missing", "empty", "too_large"])
def test_bad_uploads_get_a_clear_4xx_and_store_nothing(app, case: str) -> None:
    api = signed(app)
    conversation = api.new_conversation()
    path = f"/api/conversations/{conversation['id']}/files"
    app.config["FILE_MAX_BYTES"] = 100
    if case == "json":
        response = api.post(path, json={"file": "x"})
    else:
        fields = {"missing": {"other": ("x.txt", b"x")}, "empty": {"file": ("x.txt", b"")},
                  "too_large": {"file": ("x.txt", b"x" * 101)}}[case]
        body, content_type = multipart(fields)
        response = api.client.post(path, headers=api.headers(), data=body, content_type=content_type)
    assert response.status_code == {"json": 415, "missing": 422, "empty": 422, "too_large": 413}[case]
    assert response.get_json()["error"]["code"]
    assert api.get(f"{path}").get_json()["items"] == []


def test_queue_stats_are_served_to_admins(stack: Stack) -> None:
    admin = signed(stack.app, "root@example.com")
    with stack.app.app_context():
        db.session.execute(db.text("UPDATE users SET is_admin = true WHERE email = 'root@example.com'"))
        db.session.commit()
    body = admin.get("/api/admin/queue-stats").get_json()
    assert set(body) >= {"titleGeneration", "analytics", "fileProcessing", "redis"}
    assert set(body["titleGeneration"]) >= {"waiting", "active", "completed", "failed"}
    assert body["redis"] == {"status": "connected", "ready": True}
