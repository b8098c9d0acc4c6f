"""Accounts: organisations and memberships, passwords, server-side sessions, invitations, password resets,
token scopes and expiry, shared conversations. Every existing user gets an organisation of their own.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the account tables, add the new columns (plain ADD COLUMNs: a batch on SQLite would drop the
    search triggers), and give each existing user an organisation they own."""
    op.create_table(
        "organisations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("domain", sa.String(254), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_organisations"),
        sa.UniqueConstraint("domain", name="uq_organisations_domain"),
    )
    op.create_table(
        "memberships",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_memberships_user_id_users", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["organisation_id"], ["organisations.id"],
                                name="fk_memberships_organisation_id_organisations", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", name="pk_memberships"),
    )
    op.create_index("ix_memberships_organisation_id", "memberships", ["organisation_id"])
    op.create_table(
        "user_sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("user_agent", sa.String(200), nullable=False, server_default=""),
        sa.Column("address", sa.String(64), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_user_sessions_user_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_user_sessions"),
        sa.UniqueConstraint("token_hash", name="uq_user_sessions_token_hash"),
    )
    op.create_index("ix_user_sessions_user_id", "user_sessions", ["user_id"])
    op.create_table(
        "invitations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("organisation_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("invited_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("accepted_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["organisation_id"], ["organisations.id"],
                                name="fk_invitations_organisation_id_organisations", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["invited_by"], ["users.id"], name="fk_invitations_invited_by_users",
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_invitations"),
        sa.UniqueConstraint("token_hash", name="uq_invitations_token_hash"),
    )
    op.create_index("ix_invitations_organisation_id", "invitations", ["organisation_id"])
    op.create_table(
        "password_resets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_password_resets_user_id_users",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_password_resets"),
        sa.UniqueConstraint("token_hash", name="uq_password_resets_token_hash"),
    )
    op.create_index("ix_password_resets_user_id", "password_resets", ["user_id"])
    op.add_column("users", sa.Column("password_hash", sa.String(255), nullable=True))
    # Tokens made before scopes existed keep every scope.
    op.add_column("api_tokens", sa.Column("scopes", sa.String(32), nullable=False,
                                          server_default="read,write,admin"))
    op.add_column("api_tokens", sa.Column("expires_at", sa.DateTime(), nullable=True))
    op.add_column("conversations", sa.Column("shared", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("conversations_shared_idx", "conversations", ["shared", "user_id"])

    # One organisation per existing user (the demo user included), owned by that user: nobody can know
    # who are colleagues, so nobody is put together with anyone.
    bind = op.get_bind()
    users = bind.execute(sa.text("SELECT id, email, name, created_at FROM users ORDER BY id")).all()
    for user_id, email, name, created_at in users:
        org_id = bind.execute(sa.text("INSERT INTO organisations (name, created_at) VALUES (:name, :at) RETURNING id"),
                              {"name": (name or email)[:120], "at": created_at}).scalar_one()
        bind.execute(sa.text("INSERT INTO memberships (user_id, organisation_id, role, created_at) "
                             "VALUES (:user, :org, 'owner', :at)"), {"user": user_id, "org": org_id, "at": created_at})


def downgrade() -> None:
    """Drop what upgrade() added (native DROP COLUMNs, for the same reason)."""
    op.drop_index("conversations_shared_idx", table_name="conversations")
    op.execute("ALTER TABLE conversations DROP COLUMN shared")
    op.execute("ALTER TABLE api_tokens DROP COLUMN expires_at")
    op.execute("ALTER TABLE api_tokens DROP COLUMN scopes")
    op.execute("ALTER TABLE users DROP COLUMN password_hash")
    op.drop_table("password_resets")
    op.drop_table("invitations")
    op.drop_table("user_sessions")
    op.drop_table("memberships")
    op.drop_table("organisations")
