"""The deployment files say what runs, and what they say runs: Procfile, render.yaml, worker, migrations."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from config import Config, normalise_database_url
from luca.redis import make_client
from tests.support import ROOT
from tests.support.processes import BIN, Process, free_port, http_status, luca_env, wait_until
from tests.support.services import RedisTarget, temporary_postgres_database


def procfile() -> dict[str, str]:
    """The Procfile's process types and commands."""
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def render() -> dict:
    """render.yaml, parsed."""
    return yaml.safe_load((ROOT / "render.yaml").read_text())


def test_the_procfile_declares_web_worker_and_release() -> None:
    assert procfile() == {
        "web": "gunicorn wsgi:app -c gunicorn.conf.py",
        "worker": "python worker.py",
        "release": "flask --app wsgi db upgrade",
    }


def test_render_runs_what_the_procfile_runs() -> None:
    services = {s["name"]: s for s in render()["services"]}
    web, worker, redis = services["luca-web"], services["luca-worker"], services["luca-redis"]
    assert web["startCommand"] == procfile()["web"]
    assert web["preDeployCommand"] == procfile()["release"]
    assert web["healthCheckPath"] == "/readyz"
    assert worker["type"] == "worker" and worker["startCommand"] == procfile()["worker"]
    assert redis["type"] == "keyvalue" and redis["maxmemoryPolicy"] == "noeviction"


def test_render_wires_the_database_and_redis_into_both_services() -> None:
    blueprint = render()
    database = blueprint["databases"][0]["name"]
    for service in (s for s in blueprint["services"] if s["type"] in ("web", "worker")):
        env = {e["key"]: e for e in service["envVars"] if "key" in e}
        assert env["DATABASE_URL"]["fromDatabase"] == {"name": database, "property": "connectionString"}
        assert env["REDIS_URL"]["fromService"] == {"type": "keyvalue", "name": "luca-redis",
                                                    "property": "connectionString"}
        assert env["SECRET_KEY"] == {"key": "SECRET_KEY", "generateValue": True}
        assert {"fromGroup": "luca-ai"} in service["envVars"]


def test_render_trusts_one_proxy_hop_on_the_web_service_and_the_readme_says_so_for_heroku() -> None:
    web = next(s for s in render()["services"] if s["type"] == "web")
    assert {"key": "TRUSTED_PROXY_HOPS", "value": 1} in web["envVars"]
    assert "TRUSTED_PROXY_HOPS=1" in (ROOT / "README.md").read_text().split("### Heroku")[1].split("###")[0]


def test_the_gunicorn_config_loads_the_app(tmp_path: Path) -> None:
    env = luca_env(DATABASE_URL=f"sqlite:///{tmp_path / 'luca.db'}")
    result = subprocess.run([str(BIN / "gunicorn"), "--check-config", "wsgi:app", "-c", "gunicorn.conf.py"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("moment", ["[Worker] listening", "Listening on"])  # during start-up, and once serving
def test_the_worker_starts_and_stops_cleanly(redis_target: RedisTarget, tmp_path: Path, moment: str) -> None:
    env = luca_env(DATABASE_URL=f"sqlite:///{tmp_path / 'luca.db'}", REDIS_URL=redis_target.url,
                   REDIS_KEY_PREFIX=redis_target.prefix, QUEUE_PREFIX=f"{redis_target.prefix[:-1]}-")
    worker = subprocess.Popen([sys.executable, "worker.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        seen = []
        while time.monotonic() < deadline:
            line = worker.stdout.readline()
            seen.append(line)
            if moment in line:
                break
        else:
            pytest.fail("the worker did not start listening:\n" + "".join(seen))
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        worker.stdout.close()


def test_release_migrates_an_empty_postgresql_database_given_a_heroku_url() -> None:
    with temporary_postgres_database("luca_release") as url:
        heroku_url = "postgres://" + url.split("://", 1)[1]
        result = subprocess.run([str(BIN / "flask"), "--app", "wsgi", "db", "upgrade"], cwd=ROOT,
                                env=luca_env(DATABASE_URL=heroku_url), capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        engine = sa.create_engine(normalise_database_url(heroku_url))
        try:
            with engine.connect() as conn:
                tables = set(sa.inspect(conn).get_table_names())
        finally:
            engine.dispose()
    assert {"users", "conversations", "messages", "files", "alembic_version"} <= tables


def test_heroku_rediss_urls_accept_its_self_signed_certificate() -> None:
    config = {key: getattr(Config, key) for key in dir(Config) if key.isupper()}
    client = make_client("rediss://:secret@example.com:6380/0", {**config, "REDIS_TLS_VERIFY": False})
    try:
        assert client.connection_pool.connection_kwargs["ssl_cert_reqs"] == "none"
    finally:
        client.close()


@pytest.mark.slow
def test_make_run_on_a_clean_clone_serves_healthz_from_gunicorn(tmp_path: Path) -> None:
    clone = tmp_path / "luca"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=60)
    port = free_port()
    venv = BIN.parent  # the installed venv, named so that make does not build or install another
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    server = Process("make-run", ["make", "-C", str(clone), "run", f"VENV={venv}", f"PORT={port}",
                                  "-o", f"{venv}/.installed"], env, tmp_path / "make-run.log").start()
    try:
        wait_until(lambda: http_status(f"http://127.0.0.1:{port}/healthz") == 200 or not server.running(), 120,
                   "make run serving /healthz")
        assert server.running(), server.output()
        assert "Do not use it in a production deployment" not in server.output()
        assert re.search(r"Booting worker with pid", server.output()), server.output()
        assert "use the token above" in server.output()
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") for pid in descendants(server.pid)]
        assert any(Path(c[1].decode()).name == "gunicorn" or Path(c[0].decode()).name == "gunicorn"
                   for c in commands if len(c) > 1), commands
        assert not any(b"run" in c and b"flask" in b" ".join(c) for c in commands), commands
    finally:
        server.stop()


def descendants(pid: int) -> list[int]:
    """Every process below pid (make's shell, gunicorn's master and its workers)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    children = [int(p) for p in found.stdout.split()]
    return children + [d for child in children for d in descendants(child)]
