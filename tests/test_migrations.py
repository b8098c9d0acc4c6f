"""Migrations build the schema from nothing on both databases, and the hot queries use indexes."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_migrate import check, downgrade, upgrade

from config import TestConfig
from luca import create_app, search
from luca.conversations import service
from luca.extensions import db
from tests.support import ROOT
from tests.support.services import temporary_postgres_database

MIGRATIONS = str(ROOT / "migrations")
REQUIRED_INDEXES = {
    "conversations_metadata_idx",
    "conversations_user_created_idx",
    "messages_conversation_created_idx",
    "messages_role_created_idx",
}


def app_on(url: str) -> Flask:
    """An app bound to url."""
    return create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": url})


def table_names(app: Flask) -> set[str]:
    """The tables that exist."""
    return set(sa.inspect(db.engine).get_table_names())


def test_migrations_upgrade_downgrade_and_upgrade_again(empty_database: str) -> None:
    app = app_on(empty_database)
    with app.app_context():
        upgrade(directory=MIGRATIONS)
        assert {"users", "api_tokens", "conversations", "messages", "files", "analytics_daily"} <= table_names(app)
        if db.engine.dialect.name == "sqlite":
            triggers = db.session.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars()
            assert len(set(triggers)) == 8  # the FTS triggers survive every later migration
            db.session.remove()
        downgrade(directory=MIGRATIONS, revision="base")
        assert table_names(app) <= {"alembic_version"}
        upgrade(directory=MIGRATIONS)
        assert {"users", "api_tokens", "conversations", "messages", "files", "analytics_daily"} <= table_names(app)
        db.engine.dispose()


def test_models_match_the_migrations(empty_database: str) -> None:
    app = app_on(empty_database)
    with app.app_context():
        upgrade(directory=MIGRATIONS)
        check(directory=MIGRATIONS)  # raises when the models need a migration that does not exist
        db.engine.dispose()


@pytest.fixture(scope="module")
def postgres_with_rows() -> Iterator[Flask]:
    """A migrated PostgreSQL database: 20,000 conversations and 20,000 messages of 40 users."""
    with temporary_postgres_database("luca_explain") as url:
        app = app_on(url)
        with app.app_context():
            upgrade(directory=MIGRATIONS)
            with db.engine.begin() as conn:
                conn.execute(sa.text("""
                    INSERT INTO users (email, name, is_admin, created_at)
                    SELECT 'user' || g || '@example.com', '', false, now() FROM generate_series(1, 40) g"""))
                conn.execute(sa.text("""
                    INSERT INTO conversations (id, user_id, title, title_set_by_user, metadata, pinned,
                                               created_at, updated_at)
                    SELECT gen_random_uuid(), 1 + g % 40, 'conversation ' || g || ' about ' ||
                           (ARRAY['payroll', 'vat', 'depreciation', 'audit'])[1 + g % 4], false,
                           jsonb_build_object('n', g), g % 100 = 0,
                           now() - g * interval '1 minute', now() - g * interval '1 minute'
                      FROM generate_series(1, 20000) g"""))
                conn.execute(sa.text("""
                    WITH busy AS (SELECT array_agg(id) AS ids FROM (
                        SELECT id FROM conversations WHERE user_id = 1 ORDER BY id LIMIT 20) s)
                    INSERT INTO messages (conversation_id, user_id, role, content, status, cached, created_at)
                    SELECT busy.ids[1 + g % 20], 1, CASE WHEN g % 2 = 0 THEN 'user' ELSE 'assistant' END,
                           'question ' || g || ' about ' || (ARRAY['tax', 'vat', 'payroll', 'audit', 'ledger', 'invoice',
                           'pension', 'dividend', 'accrual', 'budget'])[1 + g % 10] || ' ' || md5(g::text), 'complete', false,
                           now() - g * interval '1 second'
                      FROM generate_series(1, 2000) g, busy"""))
                conn.execute(sa.text("""
                    INSERT INTO messages (conversation_id, user_id, role, content, status, cached, created_at)
                    SELECT c.id, c.user_id, 'user', 'another question on ' || (ARRAY['tax', 'vat', 'payroll', 'audit', 'ledger',
                           'invoice', 'pension', 'dividend', 'accrual', 'budget'])[1 + g % 10] || ' ' || md5(g::text), 'complete', false,
                           now() - g * interval '1 second'
                      FROM (SELECT id, user_id, row_number() OVER (ORDER BY id) AS n
                              FROM conversations WHERE user_id <> 1) c
                      JOIN generate_series(1, 18000) g ON c.n = g"""))
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                # As autovacuum would: flush GIN pending lists and gather statistics.
                conn.execute(sa.text("VACUUM ANALYZE"))
            yield app
            db.session.remove()
            db.engine.dispose()


def captured(app: Flask, run: Any) -> list[tuple[str, Any]]:
    """Run a query function and return the statements (with parameters) it sent."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        seen.append((statement, parameters))

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        run()
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)
    return seen


def plan(app: Flask, run: Any) -> str:
    """The EXPLAIN output of every statement a query function sends."""
    lines = []
    with db.engine.connect() as conn:
        for statement, parameters in captured(app, run):
            rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).scalars()
            lines.extend(rows)
    return "\n".join(lines)


def assert_index_scan(text: str, index: str) -> None:
    """The plan reads through index and never scans conversations or messages sequentially."""
    assert index in text, text
    assert "Seq Scan on conversations" not in text, text
    assert "Seq Scan on messages" not in text, text


def test_required_indexes_exist_on_postgresql(postgres_with_rows: Flask) -> None:
    with postgres_with_rows.app_context():
        names = set(db.session.execute(sa.text("SELECT indexname FROM pg_indexes")).scalars())
        definition = db.session.execute(sa.text(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'conversations_metadata_idx'")).scalar_one()
    assert REQUIRED_INDEXES <= names
    assert "gin" in definition and "jsonb_path_ops" in definition


def test_conversation_list_uses_an_index(postgres_with_rows: Flask) -> None:
    with postgres_with_rows.app_context():
        first = plan(postgres_with_rows, lambda: service.conversation_page(1, limit=20, cursor=None))
        _, cursor = service.conversation_page(1, limit=20, cursor=None)
        later = plan(postgres_with_rows, lambda: service.conversation_page(1, limit=20, cursor=cursor))
    assert_index_scan(first, "conversations_user_activity_idx")
    assert_index_scan(later, "conversations_user_activity_idx")


def test_message_list_uses_an_index(postgres_with_rows: Flask) -> None:
    with postgres_with_rows.app_context():
        busiest = db.session.execute(sa.text(
            "SELECT conversation_id FROM messages GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")).scalar_one()
        first = plan(postgres_with_rows, lambda: service.message_page(1, busiest, limit=50, cursor=None,
                                                                      descending=True))
        _, cursor = service.message_page(1, busiest, limit=50, cursor=None, descending=True)
        later = plan(postgres_with_rows, lambda: service.message_page(1, busiest, limit=50, cursor=cursor,
                                                                      descending=True))
    assert_index_scan(first, "messages_conversation_created_idx")
    assert_index_scan(later, "messages_conversation_created_idx")


def test_search_uses_the_user_and_words_indexes(postgres_with_rows: Flask) -> None:
    with postgres_with_rows.app_context():
        text = plan(postgres_with_rows, lambda: search.search(1, "payroll", 20))
        assert search.search(1, "payroll", 20)
    assert_index_scan(text, "messages_search_idx")
    assert "conversations_search_idx" in text


def test_metadata_filter_uses_the_gin_index(postgres_with_rows: Flask) -> None:
    with postgres_with_rows.app_context():
        text = plan(postgres_with_rows,
                    lambda: service.conversation_page(1, limit=20, cursor=None, metadata='{"n": 40}'))
    assert "conversations_metadata_idx" in text or "conversations_user_activity_idx" in text, text
    assert "Seq Scan on conversations" not in text, text
