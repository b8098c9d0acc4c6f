"""What answers and titles cost, budgets, and the index a user's month spend reads.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(18, 10)
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def prices() -> dict:
    """The price table of the app running the migration (`flask db upgrade`), else the defaults."""
    from flask import has_app_context

    from luca import pricing

    if has_app_context():
        return pricing.price_table()
    return {name: tuple(map(pricing.Decimal, pair)) for name, pair in pricing.PRICES.items()}


def backfill() -> None:
    """Price every existing answer by its provider, model and tokens; a deduplicated one cost 0 and saved that."""
    from luca import pricing

    bind = op.get_bind()
    table = prices()
    pairs = bind.execute(sa.text("SELECT DISTINCT provider, model FROM messages "
                                 "WHERE role = 'assistant' AND cost_usd IS NULL")).all()
    full = "ROUND((COALESCE(tokens_in, 0) * :pin + COALESCE(tokens_out, 0) * :pout) / 1000, 10)"
    same = "IS NOT DISTINCT FROM" if bind.dialect.name == "postgresql" else "IS"
    update = sa.text(
        f"UPDATE messages SET cost_usd = CASE WHEN cached THEN 0 ELSE {full} END, "
        f"saved_usd = CASE WHEN cached THEN {full} ELSE NULL END "
        f"WHERE role = 'assistant' AND cost_usd IS NULL AND provider {same} :provider AND model {same} :model"
    ).bindparams(sa.bindparam("pin", type_=MONEY), sa.bindparam("pout", type_=MONEY),
                 sa.bindparam("provider", type_=sa.String()), sa.bindparam("model", type_=sa.String()))
    for provider, model in pairs:
        price_in, price_out = pricing.price_of(provider, model, table)
        bind.execute(update, {"pin": price_in, "pout": price_out, "provider": provider, "model": model})


def upgrade() -> None:
    """Add messages.cost_usd and saved_usd (backfilled), the conversations' title cost, and budgets."""
    # Plain ADD COLUMNs: a batch (copy-and-rename) on SQLite would drop the search triggers.
    op.add_column("messages", sa.Column("cost_usd", MONEY, nullable=True))
    op.add_column("messages", sa.Column("saved_usd", MONEY, nullable=True))
    op.add_column("conversations", sa.Column("title_cost_usd", MONEY, nullable=True))
    op.add_column("conversations", sa.Column("titled_at", sa.DateTime(), nullable=True))
    op.create_index("messages_user_created_idx", "messages", ["user_id", "created_at"])
    op.create_table(
        "budgets",
        sa.Column("holder_kind", sa.String(16), nullable=False),
        sa.Column("holder_id", BIGINT_ID, nullable=False),
        sa.Column("monthly_budget_usd", MONEY, nullable=False),
        sa.Column("alerted_month", sa.String(7), nullable=True),
        sa.Column("alerted_percent", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("holder_kind", "holder_id", name="pk_budgets"),
    )
    backfill()


def downgrade() -> None:
    """Drop what upgrade() added."""
    op.drop_table("budgets")
    op.drop_index("messages_user_created_idx", "messages")
    for table, column in (("conversations", "titled_at"), ("conversations", "title_cost_usd"),
                          ("messages", "saved_usd"), ("messages", "cost_usd")):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
