"""Usage reports: totals and groups summed from the messages table, exact; JSON or CSV; strict parameters."""
from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from luca.extensions import db
from luca.models import utcnow
from tests.support.api import Api, create_user, signed
from tests.support.apps import provider_overrides

PRICES = {"primary-model": [1.5, 2.25], "backup-model": [0.5, 0.125]}


@pytest.fixture
def usage_app(app_factory, servers) -> Flask:
    """An app on both fake providers, with prices."""
    return app_factory(**provider_overrides(*servers, AI_PRICES=PRICES))


@pytest.fixture
def activity(usage_app: Flask, servers) -> tuple[Api, Api, Api]:
    """Two users' answers from two models, one deduplicated, some of them three days old; and an operator."""
    primary, _ = servers
    alice, bob = signed(usage_app, org="Acme"), signed(usage_app, org="Acme")
    admin_id, admin_token = create_user(usage_app, "ops@example.com", admin=True)
    operator = Api(usage_app.test_client(), admin_token, admin_id)
    for api in (alice, bob):
        api.ask(api.new_conversation()["id"], "What is the VAT rate?")  # bob's is deduplicated
    conversation = alice.new_conversation()["id"]
    alice.ask(conversation, "How do I book depreciation?")
    primary.configure(status=500)
    alice.ask(conversation, "And amortisation?")  # the backup answers
    bob.ask(bob.new_conversation()["id"], "What is goodwill?")
    primary.configure(status=None)
    with usage_app.app_context():  # alice's first conversation happened three days ago
        first = db.session.execute(sa.text("SELECT min(id) FROM messages WHERE user_id = :u"),
                                   {"u": alice.user_id}).scalar_one()
        db.session.execute(sa.text("UPDATE messages SET created_at = :t WHERE id IN (:a, :b)"),
                           {"t": utcnow() - timedelta(days=3), "a": first, "b": first + 1})
        db.session.commit()
    return alice, bob, operator


COLUMNS = "user_id, provider, model, source, created_at, tokens_in, tokens_out, cost_usd, saved_usd, cached"


def answers(app: Flask, user_id: int | None = None) -> list[dict[str, Any]]:
    """Every answer (of one user) as plain values: the stored ones and the usage records of unstored ones."""
    only = " AND user_id = :u" if user_id else ""
    with app.app_context():
        rows = db.session.execute(sa.text(
            f"SELECT {COLUMNS}, (SELECT organisation_id FROM memberships m WHERE m.user_id = a.user_id) AS org "
            f"FROM (SELECT {COLUMNS} FROM messages WHERE role = 'assistant'{only} "
            f"UNION ALL SELECT {COLUMNS} FROM usage_records WHERE 1 = 1{only}) a"), {"u": user_id}).mappings().all()
    return [dict(row) for row in rows]


def summed(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's figures, summed in Python over message rows."""
    count = len(rows)
    return {"answers": count, "tokens_in": sum(r["tokens_in"] for r in rows),
            "tokens_out": sum(r["tokens_out"] for r in rows),
            "cost_usd": sum((Decimal(str(r["cost_usd"])) for r in rows), Decimal(0)),
            "saved_usd": sum((Decimal(str(r["saved_usd"] or 0)) for r in rows), Decimal(0)),
            "cached_share": round(sum(bool(r["cached"]) for r in rows) / count, 4) if count else 0.0}


def as_numbers(totals: dict[str, Any]) -> dict[str, Any]:
    """A report's totals with its decimal strings as Decimals."""
    return {**totals, "cost_usd": Decimal(totals["cost_usd"]), "saved_usd": Decimal(totals["saved_usd"])}


def group_of(row: dict[str, Any], group_by: str) -> str:
    """A message row's group, as the report names it."""
    if group_by == "day":
        created = row["created_at"]
        return (created if isinstance(created, str) else created.isoformat())[:10]
    return str(row["user_id"] if group_by == "user" else row[group_by])


def assert_report_is_the_sums(report: dict[str, Any], rows: list[dict[str, Any]], group_by: str) -> None:
    """The report's totals and every group's equal the sums over rows."""
    assert as_numbers(report["totals"]) == summed(rows)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[group_of(row, group_by)].append(row)
    assert {item["group"]: as_numbers({k: v for k, v in item.items() if k != "group"}) for item in report["items"]} \
        == {group: summed(members) for group, members in groups.items()}


@pytest.mark.parametrize("group_by", ["day", "user", "model", "provider", "source", "org"])
def test_usage_totals_and_groups_equal_sums_over_the_messages_table(usage_app, activity, group_by: str) -> None:
    _, _, operator = activity
    globex = signed(usage_app, org="Globex")  # another organisation: an operator sees every one
    globex.ask(globex.new_conversation()["id"], "What is a ledger?")
    start = (utcnow() - timedelta(days=10)).date()
    report = operator.get(f"/api/usage?from={start}&to={utcnow().date()}&group_by={group_by}").get_json()
    assert_report_is_the_sums(report, answers(usage_app), group_by)
    assert len(report["items"]) >= (1 if group_by == "source" else 2)


@pytest.mark.parametrize("group_by", ["user", "model", "day"])
def test_an_org_admin_sees_their_organisation_and_never_another_s_rows(usage_app, activity, group_by: str) -> None:
    alice, bob, _ = activity  # alice owns Acme, bob is a member
    globex = signed(usage_app, org="Globex")
    globex.ask(globex.new_conversation()["id"], "What is VAT?")
    start = (utcnow() - timedelta(days=10)).date()
    report = alice.get(f"/api/usage?from={start}&group_by={group_by}").get_json()
    acme = [row for row in answers(usage_app) if row["user_id"] in (alice.user_id, bob.user_id)]
    assert_report_is_the_sums(report, acme, group_by)
    assert report["totals"]["answers"] == 5


def test_usage_counts_what_deduplication_saved(usage_app, activity) -> None:
    _, bob, _ = activity
    mine = bob.get("/api/me/usage").get_json()["totals"]
    assert mine["answers"] == 2 and mine["cached_share"] == 0.5
    assert Decimal(mine["saved_usd"]) > 0


def test_my_usage_is_mine_alone_and_the_range_excludes_older_days(usage_app, activity) -> None:
    alice, _, _ = activity
    this_month = alice.get("/api/me/usage?group_by=model").get_json()
    today = utcnow().date()
    only_today = alice.get(f"/api/me/usage?from={today}&to={today}").get_json()
    rows = answers(usage_app, alice.user_id)
    assert this_month["from"] == today.replace(day=1).isoformat() and this_month["to"] == today.isoformat()
    recent = [r for r in rows if group_of(r, "day") == today.isoformat()]
    assert as_numbers(only_today["totals"]) == summed(recent)
    assert len(recent) == len(rows) - 1  # the answer of three days ago is left out
    assert {item["group"] for item in this_month["items"]} <= {"primary-model", "backup-model"}


def test_usage_across_users_is_for_org_admins_and_operators(activity) -> None:
    _, bob, _ = activity  # a member of Acme
    response = bob.get("/api/usage")
    assert response.status_code == 403 and response.get_json()["error"]["code"] == "forbidden"


@pytest.mark.sqlite_only
@pytest.mark.parametrize("path", ["/api/usage", "/api/me/usage"])
def test_grouping_by_organisation_is_for_operators_alone_a_403(usage_app, path: str) -> None:
    owner = signed(usage_app, org="Acme")
    response = owner.get(f"{path}?group_by=org")
    assert response.status_code == 403
    assert [d["field"] for d in response.get_json()["error"]["details"]] == ["group_by"]


def test_usage_as_csv(usage_app, activity) -> None:
    _, _, operator = activity
    start = (utcnow() - timedelta(days=10)).date()
    path = f"/api/usage?from={start}&group_by=user"
    response = operator.get(path, headers={"Accept": "text/csv"})
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    items = operator.get(path).get_json()["items"]
    assert [(r["group"], int(r["answers"]), Decimal(r["cost_usd"])) for r in rows] == \
        [(i["group"], i["answers"], Decimal(i["cost_usd"])) for i in items]
    ungrouped = operator.get("/api/me/usage", headers={"Accept": "text/csv"}).get_data(as_text=True).splitlines()
    assert ungrouped[0].startswith("group,answers") and ungrouped[1].startswith("total,0,")


@pytest.mark.sqlite_only
@pytest.mark.parametrize(("query", "field"), [
    ("from=2026-02-30", "from"), ("from=yesterday", "from"), ("to=2026-13-01", "to"), ("from=", "from"),
    ("group_by=team", "group_by"), ("group_by=", "group_by"), ("colour=blue", "colour"),
    ("from=2026-12-02&to=2026-12-01", "from"), ("from=2020-01-01&to=2026-12-01", "to"),
])
def test_bad_usage_parameters_are_a_422_naming_the_parameter(api: Api, query: str, field: str) -> None:
    response = api.get(f"/api/me/usage?{query}")
    assert response.status_code == 422, response.get_data(as_text=True)
    assert [d["field"] for d in response.get_json()["error"]["details"]] == [field]
