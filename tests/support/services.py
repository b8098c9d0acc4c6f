"""The run's PostgreSQL and Redis: where they are, temporary databases, key prefixes, skip or fail.

Tests skip when a service is not answering, unless LUCA_REQUIRE_SERVICES=1 (set by CI), which
turns a missing service into a failure.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

REDIS_URL = os.environ.get("LUCA_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
POSTGRES_URL = os.environ.get("LUCA_TEST_POSTGRES_URL", "postgresql+psycopg://127.0.0.1:5432/test")
REQUIRE_SERVICES = os.environ.get("LUCA_REQUIRE_SERVICES", "").lower() in {"1", "true", "yes"}


def service_missing(reason: str) -> None:
    """Skip a test whose service is down, or fail it when CI says services are mandatory."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (LUCA_REQUIRE_SERVICES=1 makes this a failure)", pytrace=False)
    pytest.skip(reason)


@contextmanager
def temporary_postgres_database(prefix: str = "luca_test") -> Iterator[str]:
    """Create an empty PostgreSQL database for this run and drop it afterwards."""
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        service_missing(f"PostgreSQL is not answering at {sa.make_url(POSTGRES_URL).render_as_string()}: "
                        f"{type(exc.orig).__name__}")
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class RedisTarget:
    """The test's Redis: a URL, a key prefix of its own, and a client to inspect it."""

    url: str
    prefix: str
    client: Any

    def overrides(self) -> dict[str, Any]:
        """App settings that point Luca at this Redis and prefix."""
        return {"REDIS_URL": self.url, "REDIS_KEY_PREFIX": self.prefix}

    def delete(self, *patterns: str) -> None:
        """Delete every key matching one of the patterns."""
        for pattern in patterns:
            keys = list(self.client.scan_iter(match=pattern, count=1000))
            if keys:
                self.client.delete(*keys)

    def delete_queues(self, queue_prefix: str) -> None:
        """Delete the RQ keys of the queues and jobs a QUEUE_PREFIX named."""
        self.delete(f"rq:*{queue_prefix}*", f"rq:job:{queue_prefix}*", f"rq:results:{queue_prefix}*")
