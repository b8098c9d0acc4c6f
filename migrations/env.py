"""Alembic environment for Flask-Migrate: runs migrations against the app's engine."""
import logging
from logging.config import fileConfig

from alembic import context
from flask import current_app

from luca.models import MIGRATION_ONLY

config = context.config
if config.config_file_name is not None and not logging.getLogger().handlers:
    # Only configure logging for command-line runs; never undo the app's loggers.
    fileConfig(config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("alembic.env")

target_db = current_app.extensions["migrate"].db


def include_object(obj, name, type_, reflected, compare_to):  # noqa: ANN001, ANN201
    """Leave out the dialect-specific search objects that exist only in migrations."""
    return name not in MIGRATION_ONLY and not (name or "").startswith(
        ("messages_fts", "conversations_fts", "document_chunks_fts"))


def run_migrations_offline() -> None:
    """Emit SQL for the configured URL without connecting."""
    url = target_db.engine.url.render_as_string(hide_password=False)
    context.configure(url=url, target_metadata=target_db.metadata, literal_binds=True,
                      include_object=include_object, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on a connection from the app's engine."""

    def process_revision_directives(ctx, revision, directives):  # noqa: ANN001, ANN202
        if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
            directives[:] = []
            logger.info("No changes in schema detected.")

    conf_args = dict(current_app.extensions["migrate"].configure_args)
    conf_args.setdefault("process_revision_directives", process_revision_directives)
    conf_args["include_object"] = include_object

    with target_db.engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_db.metadata, **conf_args)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
