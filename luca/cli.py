"""Command-line tools: `flask --app wsgi users ...`, `tokens ...`, `orgs ...` and the operations groups."""
from __future__ import annotations

import json
import re
import sys
import time

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import func, select, update

from luca.auth import forget_tokens, hash_token, issue_token
from luca.extensions import breakers, cache, db, jobs
from luca.jobs.reconcile import reconcile
from luca.models import ApiToken, Membership, Organisation, User, utcnow

users_cli = AppGroup("users", help="Create users, print password reset links.")
tokens_cli = AppGroup("tokens", help="Create, list and revoke API tokens.")
cache_cli = AppGroup("cache", help="Manage the cache.")
jobs_cli = AppGroup("jobs", help="Background jobs.")
queue_cli = AppGroup("queue", help="Queue statistics.")
breakers_cli = AppGroup("breakers", help="Circuit breakers.")
orgs_cli = AppGroup("orgs", help="Organisations: the email domains they take single sign-on users from.")

DEMO_EMAIL = "demo@luca.local"
# An email domain: dot-separated labels of letters, digits and inner hyphens, at most 254 characters.
DOMAIN = re.compile(r"(?=.{1,254}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
# Longer than a request takes from reading a token's row to caching it.
REVOKE_SETTLE_SECONDS = 1.0


def find_user(email: str) -> User:
    """The user with this email (case-insensitive), or a click error."""
    user = db.session.execute(select(User).where(func.lower(User.email) == email.strip().lower())).scalar_one_or_none()
    if user is None:
        raise click.ClickException(f"no user with email {email}")
    return user


@users_cli.command("create")
@click.argument("email")
@click.option("--name", default="", help="Display name.")
@click.option("--admin", is_flag=True, help="Allow the operator endpoints (a platform operator).")
@click.option("--org", "org_name", default=None,
              help="Join the organisation of this name as a member (its owner when it is new); "
                   "default: a new organisation of the user's own.")
def create_user(email: str, name: str, admin: bool, org_name: str | None) -> None:
    """Create a user and print its first API token (the last line of output)."""
    from luca.accounts.service import create_account

    email = email.strip().lower()
    if "@" not in email or len(email) > 254:
        raise click.ClickException("give a valid email address")
    if db.session.execute(select(User.id).where(User.email == email)).first():
        raise click.ClickException(f"a user with email {email} already exists; use `tokens create`")
    organisation, role = None, "owner"
    if org_name:
        organisation = db.session.execute(select(Organisation).where(Organisation.name == org_name)
                                          .order_by(Organisation.id)).scalars().first()
        if organisation is None:
            organisation = Organisation(name=org_name[:120])
        else:
            role = "member"
    user = create_account(email, name, organisation=organisation, role=role, is_admin=admin)
    token, _ = issue_token(user, name="cli")
    db.session.commit()
    click.echo(f"created {'admin ' if admin else ''}user {email} (id {user.id}, {role} of organisation "
               f"{user.membership.organisation_id}); its API token:")
    click.echo(token)


@users_cli.command("reset-link")
@click.argument("email")
def reset_link(email: str) -> None:
    """Print a one-time link, valid for an hour, with which the user chooses a new password (no mail needed)."""
    from luca.accounts.service import create_reset_link

    user = find_user(email)
    if user.membership is None:
        raise click.ClickException(f"{user.email} belongs to no organisation (removed); invite them again")
    click.echo(f"password reset link for {user.email} (one use, valid {current_app.config['RESET_LIFETIME_MINUTES']} "
               "minutes):")
    click.echo(create_reset_link(user))


@users_cli.command("demo")
def demo_user() -> None:
    """Make sure the local demo admin exists and print a fresh token for it (used by `make run`)."""
    user = db.session.execute(select(User).where(User.email == DEMO_EMAIL)).scalar_one_or_none()
    if user is None:
        user = User(email=DEMO_EMAIL, name="Demo", is_admin=True)
        db.session.add(user)
    if user.membership is None:
        user.membership = Membership(organisation=Organisation(name="Demo"), role="owner")
    token, _ = issue_token(user, name="make run")
    db.session.commit()
    click.echo(f"demo user {DEMO_EMAIL}; sign in with this API token:")
    click.echo(token)


@tokens_cli.command("create")
@click.argument("email")
@click.option("--name", default="", help="A label to recognise the token by.")
def create_token(email: str, name: str) -> None:
    """Create another API token for a user and print it (the last line of output)."""
    user = find_user(email)
    token, _ = issue_token(user, name=name)
    db.session.commit()
    click.echo(f"new API token for {user.email}:")
    click.echo(token)


@tokens_cli.command("list")
@click.argument("email")
def list_tokens(email: str) -> None:
    """List a user's live tokens: the id `tokens revoke --id` takes, prefix, name, created, last used."""
    user = find_user(email)
    rows = db.session.execute(select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                              .order_by(ApiToken.id)).scalars().all()
    click.echo(f"{'id':>6}  {'prefix':<14}{'name':<24}{'created':<21}last used")
    for row in rows:
        last_used = f"{row.last_used_at:%Y-%m-%d %H:%M:%S}" if row.last_used_at else "never"
        click.echo(f"{row.id:>6}  {row.prefix + '…':<14}{row.name or '-':<24}{row.created_at:%Y-%m-%d %H:%M:%S}  {last_used}")
    click.echo(f"{len(rows)} live token{'s' if len(rows) != 1 else ''} of {user.email}")


def forget_revoked(token_hashes: list[str]) -> bool:
    """Drop the tokens' cached copies, and with Redis once more a moment later; False if Redis did not answer.

    A request that read a token just before its revocation was committed may write it to
    Redis just after the first deletion; the second one removes that copy.
    """
    if not forget_tokens(token_hashes):
        return False
    if cache.shared is None:
        return True
    time.sleep(REVOKE_SETTLE_SECONDS)
    return forget_tokens(token_hashes)


def read_token(source: str | None) -> str:
    """The token to revoke: from standard input with "-", else asked for without echo."""
    if source == "-":
        token = sys.stdin.read().strip()
    else:
        token = click.prompt("API token to revoke", hide_input=True).strip()
    if not token:
        raise click.UsageError("no token was given")
    return token


@tokens_cli.command("revoke")
@click.argument("source", required=False, metavar="[-]")
@click.option("--id", "token_id", type=int, help="Revoke the token with this id (see `tokens list EMAIL`).")
@click.option("--all", "all_for", metavar="EMAIL", help="Revoke every token of this user.")
def revoke_token(source: str | None, token_id: int | None, all_for: str | None) -> None:
    """Revoke one token by --id, every token of a user with --all EMAIL, or the token read from standard input (-) or a prompt.

    The token itself is never taken as an argument: arguments end up in shell histories and
    process lists. Exits non-zero when Redis is configured but could not be reached, because
    other processes may then accept the token until its cached copy expires (CACHE_TTL).
    """
    if source not in (None, "-"):
        raise click.UsageError("the token is read from standard input (`tokens revoke -`) or a hidden prompt, "
                               "never from the command line; or give --id N (see `tokens list EMAIL`)")
    if sum(x is not None for x in (source, token_id, all_for)) > 1:
        raise click.UsageError("give one of -, --id N or --all EMAIL")
    target = select(ApiToken.id, ApiToken.token_hash, ApiToken.revoked_at)
    if token_id is not None:
        target = target.where(ApiToken.id == token_id)
    elif all_for is not None:
        target = target.where(ApiToken.user_id == find_user(all_for).id)
    else:
        target = target.where(ApiToken.token_hash == hash_token(read_token(source)))
    rows = db.session.execute(target).all()
    if not rows:
        raise click.ClickException("no token matches")
    live = [row.id for row in rows if row.revoked_at is None]
    if live:
        db.session.execute(update(ApiToken).where(ApiToken.id.in_(live), ApiToken.revoked_at.is_(None))
                           .values(revoked_at=utcnow()))
    db.session.commit()
    # Cached copies of already revoked tokens go too, so running the command again finishes the job.
    if not forget_revoked([row.token_hash for row in rows]):
        raise click.ClickException(
            f"{len(live)} token{'s' if len(live) != 1 else ''} revoked in the database, but Redis could not be "
            f"reached to drop the cached copies: other processes may accept "
            f"{'them' if len(rows) != 1 else 'it'} for up to {current_app.config['CACHE_TTL']} seconds "
            "(CACHE_TTL). Run the same command again once Redis answers.")
    already = len(rows) - len(live)
    click.echo(f"revoked {len(live)} token{'s' if len(live) != 1 else ''}"
               + (f" ({already} already revoked)" if already else ""))


@cache_cli.command("clear")
def clear_cache() -> None:
    """Delete every cached value (only Luca's cache keys; RQ's queues are untouched)."""
    deleted = cache.clear()
    click.echo(f"cache cleared ({deleted} Redis keys deleted, process memory emptied)")


@jobs_cli.command("reconcile")
def reconcile_jobs() -> None:
    """Enqueue the job outbox at once, then the work the database says is unfinished (titles, files, days)."""
    counts = reconcile(current_app._get_current_object())  # type: ignore[attr-defined]
    click.echo("enqueued " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))


@queue_cli.command("stats")
def queue_stats() -> None:
    """Print the queue statistics as JSON."""
    click.echo(json.dumps(jobs.stats(), indent=2))


@breakers_cli.command("reset")
@click.argument("name")
def reset_breaker(name: str) -> None:
    """Close a circuit breaker by hand (database, external-api, redis, AI-<provider>)."""
    breaker = breakers.find(name)
    if breaker is None:
        raise click.ClickException(f"no breaker named {name}")
    breaker.reset()
    click.echo(f"{breaker.name} reset: {breaker.current_state}")


@orgs_cli.command("claim-domain")
@click.argument("org_id", type=int)
@click.argument("domain")
def claim_domain(org_id: int, domain: str) -> None:
    """Let an organisation take new single sign-on users whose verified email is at DOMAIN (an operator's decision).

    Refused when another organisation holds the domain: release it there first (`orgs release-domain`).
    """
    domain = domain.strip().lower().lstrip("@")
    if not DOMAIN.fullmatch(domain):
        raise click.ClickException(f"{domain!r} is not an email domain (like firm.example)")
    organisation = db.session.get(Organisation, org_id) if 0 < org_id < 2**31 else None
    if organisation is None:
        raise click.ClickException(f"no organisation with id {org_id}")
    holder = db.session.execute(select(Organisation).where(Organisation.domain == domain)).scalar_one_or_none()
    if holder is not None and holder.id != organisation.id:
        raise click.ClickException(f"{domain} is claimed by organisation {holder.id} ({holder.name}); "
                                   f"run `orgs release-domain {holder.id}` first if it should move")
    organisation.domain = domain
    db.session.commit()
    click.echo(f"organisation {organisation.id} ({organisation.name}) now takes single sign-on users of {domain}")


@orgs_cli.command("release-domain")
@click.argument("org_id", type=int)
def release_domain(org_id: int) -> None:
    """Stop an organisation from taking new single sign-on users by email domain (its members stay)."""
    organisation = db.session.get(Organisation, org_id) if 0 < org_id < 2**31 else None
    if organisation is None:
        raise click.ClickException(f"no organisation with id {org_id}")
    released, organisation.domain = organisation.domain, None
    db.session.commit()
    click.echo(f"organisation {organisation.id} ({organisation.name}) released {released or 'no domain'}")


def register_cli(app: Flask) -> None:
    """Attach the command groups to the app's CLI."""
    for group in (users_cli, tokens_cli, orgs_cli, cache_cli, jobs_cli, queue_cli, breakers_cli):
        app.cli.add_command(group)
