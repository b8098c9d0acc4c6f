"""Command-line tools: `flask --app wsgi users ...` and `flask --app wsgi tokens ...`."""
from __future__ import annotations

import json

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import func, select, update

from luca.auth import forget_tokens, hash_token, issue_token
from luca.breakers import find_breaker
from luca.cache import get_cache
from luca.extensions import db
from luca.jobs.queue import get_queue_stats
from luca.jobs.tasks import reconcile
from luca.models import ApiToken, User, utcnow

users_cli = AppGroup("users", help="Create users.")
tokens_cli = AppGroup("tokens", help="Create and revoke API tokens.")
cache_cli = AppGroup("cache", help="Manage the cache.")
jobs_cli = AppGroup("jobs", help="Background jobs.")
queue_cli = AppGroup("queue", help="Queue statistics.")
breakers_cli = AppGroup("breakers", help="Circuit breakers.")

DEMO_EMAIL = "demo@luca.local"


def find_user(email: str) -> User:
    """The user with this email (case-insensitive), or a click error."""
    user = db.session.execute(select(User).where(func.lower(User.email) == email.strip().lower())).scalar_one_or_none()
    if user is None:
        raise click.ClickException(f"no user with email {email}")
    return user


@users_cli.command("create")
@click.argument("email")
@click.option("--name", default="", help="Display name.")
@click.option("--admin", is_flag=True, help="Allow the operator endpoints.")
def create_user(email: str, name: str, admin: bool) -> None:
    """Create a user and print its first API token (the last line of output)."""
    email = email.strip().lower()
    if "@" not in email or len(email) > 254:
        raise click.ClickException("give a valid email address")
    if db.session.execute(select(User.id).where(User.email == email)).first():
        raise click.ClickException(f"a user with email {email} already exists; use `tokens create`")
    user = User(email=email, name=name, is_admin=admin)
    db.session.add(user)
    token = issue_token(user, name="cli")
    db.session.commit()
    click.echo(f"created {'admin ' if admin else ''}user {email} (id {user.id}); its API token:")
    click.echo(token)


@users_cli.command("demo")
def demo_user() -> None:
    """Make sure the local demo admin exists and print a fresh token for it (used by `make run`)."""
    user = db.session.execute(select(User).where(User.email == DEMO_EMAIL)).scalar_one_or_none()
    if user is None:
        user = User(email=DEMO_EMAIL, name="Demo", is_admin=True)
        db.session.add(user)
    token = issue_token(user, name="make run")
    db.session.commit()
    click.echo(f"demo user {DEMO_EMAIL}; sign in with this API token:")
    click.echo(token)


@tokens_cli.command("create")
@click.argument("email")
@click.option("--name", default="", help="A label to recognise the token by.")
def create_token(email: str, name: str) -> None:
    """Create another API token for a user and print it (the last line of output)."""
    user = find_user(email)
    token = issue_token(user, name=name)
    db.session.commit()
    click.echo(f"new API token for {user.email}:")
    click.echo(token)


@tokens_cli.command("revoke")
@click.argument("token", required=False)
@click.option("--all", "all_for", metavar="EMAIL", help="Revoke every token of this user instead.")
def revoke_token(token: str | None, all_for: str | None) -> None:
    """Revoke one token (given in full), or every token of a user with --all EMAIL."""
    if bool(token) == bool(all_for):
        raise click.UsageError("give either a TOKEN or --all EMAIL")
    stmt = update(ApiToken).where(ApiToken.revoked_at.is_(None)).values(revoked_at=utcnow())
    if token:
        stmt = stmt.where(ApiToken.token_hash == hash_token(token.strip()))
    else:
        stmt = stmt.where(ApiToken.user_id == find_user(all_for or "").id)
    hashes = list(db.session.execute(stmt.returning(ApiToken.token_hash)).scalars())
    db.session.commit()
    forget_tokens(hashes)
    revoked = len(hashes)
    if token and revoked == 0:
        raise click.ClickException("no live token matches")
    click.echo(f"revoked {revoked} token{'s' if revoked != 1 else ''}")


@cache_cli.command("clear")
def clear_cache() -> None:
    """Delete every cached value (only Luca's cache keys; RQ's queues are untouched)."""
    deleted = get_cache().clear()
    click.echo(f"cache cleared ({deleted} Redis keys deleted, process memory emptied)")


@jobs_cli.command("reconcile")
def reconcile_jobs() -> None:
    """Enqueue the job outbox at once, then the work the database says is unfinished (titles, files, days)."""
    counts = reconcile(current_app._get_current_object())  # type: ignore[attr-defined]
    click.echo("enqueued " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))


@queue_cli.command("stats")
def queue_stats() -> None:
    """Print the queue statistics as JSON."""
    click.echo(json.dumps(get_queue_stats(), indent=2))


@breakers_cli.command("reset")
@click.argument("name")
def reset_breaker(name: str) -> None:
    """Close a circuit breaker by hand (database, external-api, redis, AI-<provider>)."""
    breaker = find_breaker(name)
    if breaker is None:
        raise click.ClickException(f"no breaker named {name}")
    breaker.reset()
    click.echo(f"{breaker.name} reset: {breaker.current_state}")


def register_cli(app: Flask) -> None:
    """Attach the command groups to the app's CLI."""
    for group in (users_cli, tokens_cli, cache_cli, jobs_cli, queue_cli, breakers_cli):
        app.cli.add_command(group)
