"""Health checks for load balancers and operators: /healthz (alive) and /readyz (ready to serve)."""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from flask import Flask, current_app, jsonify
from flask.typing import ResponseReturnValue
from pybreaker import CircuitBreakerError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from luca.errors import rollback_quietly
from luca.extensions import db, jobs, redis_gateway
from luca.redis import REDIS_ERRORS

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent


def migration_heads(app: Flask) -> frozenset[str]:
    """The revisions the code expects the database to be at (its migrations directory's heads)."""
    directory = Path(app.config.get("MIGRATIONS_DIR", "migrations"))
    return directory_heads(directory if directory.is_absolute() else ROOT / directory)


@functools.cache
def directory_heads(directory: Path) -> frozenset[str]:
    """The head revisions of a migrations directory, read once per process (the files ship with the code)."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(directory))
    return frozenset(ScriptDirectory.from_config(config).get_heads())


def check_database() -> dict[str, Any]:
    """Whether the database answers and its schema is at the migration head."""
    try:
        current = set(db.session.execute(text("SELECT version_num FROM alembic_version")).scalars())
    except (SQLAlchemyError, CircuitBreakerError) as exc:
        rollback_quietly()
        return {"status": "down", "error": type(exc).__name__}
    finally:
        db.session.remove()
    expected = migration_heads(current_app)
    if current != expected:
        return {"status": "behind", "current": sorted(current), "head": sorted(expected)}
    return {"status": "ok", "revision": sorted(current)}


def check_redis() -> dict[str, Any]:
    """Whether Redis answers; Luca serves without it, so a failure is `degraded`, not down."""
    redis = redis_gateway.client
    if redis is None:
        return {"status": "not configured"}
    try:
        redis.ping()
    except REDIS_ERRORS as exc:
        return {"status": "degraded", "error": type(exc).__name__}
    return {"status": "ok"}


def register_health(app: Flask) -> None:
    """Add /healthz and /readyz (unauthenticated, cheap)."""

    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        """The process is alive; no dependency is checked."""
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> ResponseReturnValue:
        """Ready when the database answers at the migration head; Redis and queues may be degraded."""
        database = check_database()
        redis = check_redis()
        mode = jobs.mode
        queues = {"status": "ok" if mode != "rq" or redis["status"] == "ok" else "degraded", "mode": mode}
        checks = {"database": database, "redis": redis, "queues": queues}
        if database["status"] != "ok":
            return jsonify(status="unavailable", checks=checks), 503
        degraded = redis["status"] == "degraded" or queues["status"] == "degraded"
        return jsonify(status="degraded" if degraded else "ok", checks=checks), 200
