"""Every service an app holds, declared unbound here and built for each app in create_app().

`db` and `migrate` are Flask-SQLAlchemy's and Flask-Migrate's. Luca's own services are
`Extension`s: `cache.init_app(app)` builds the app's CacheService; `cache.get(key)` then asks
the current app's service, and `cache.of(app)` a given app's (outside a request or app
context, and in tests). shutdown(app) releases what an app's services hold.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from flask import Flask, current_app
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

if TYPE_CHECKING:
    from luca.ai.chain import Providers
    from luca.ai.dedup import Deduplicator
    from luca.alerts import AlertMonitor
    from luca.breakers import Breakers
    from luca.budgets import BudgetLedger
    from luca.cache import CacheService
    from luca.jobs.queue import Jobs
    from luca.limits import AppLimits
    from luca.redis import RedisGateway
    from luca.slots import AnswerSlots

S = TypeVar("S")


class Base(DeclarativeBase):
    """Declarative base with a naming convention so migrations name constraints alike."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Extension(Generic[S]):
    """One service per app: init_app(app) builds it; attributes are the current app's service's.

    The service is named by its import path ("luca.cache:CacheService", a class or function
    taking the app) and imported when the first app is built: the service modules import these
    instances, so this module cannot import them first.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._key = f"luca:{path}"

    def init_app(self, app: Flask) -> S:
        """Build the app's service (again, if it had one) and keep it in the app."""
        module, _, name = self._path.partition(":")
        service = getattr(import_module(module), name)(app)
        app.extensions[self._key] = service
        return service

    def of(self, app: Flask | None = None) -> S:
        """The service of app, or of the current app."""
        return (app or current_app).extensions[self._key]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy, pickle and introspection must not need an app
            raise AttributeError(name)
        return getattr(self.of(), name)

    def __repr__(self) -> str:
        return f"Extension({self._path!r})"


# Objects stay usable after commit, so serialising a saved row costs no extra query.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
migrate = Migrate()

breakers: Extension[Breakers] = Extension("luca.breakers:Breakers")
redis_gateway: Extension[RedisGateway] = Extension("luca.redis:RedisGateway")
cache: Extension[CacheService] = Extension("luca.cache:CacheService")
jobs: Extension[Jobs] = Extension("luca.jobs.queue:Jobs")
slots: Extension[AnswerSlots] = Extension("luca.slots:AnswerSlots")
limits: Extension[AppLimits] = Extension("luca.limits:AppLimits")
alerts: Extension[AlertMonitor] = Extension("luca.alerts:AlertMonitor")
providers: Extension[Providers] = Extension("luca.ai.chain:Providers")
dedup: Extension[Deduplicator] = Extension("luca.ai.dedup:Deduplicator")
budget_ledger: Extension[BudgetLedger] = Extension("luca.budgets:BudgetLedger")
# The OpenAPI document (a dict); built after the blueprints, since it reads the URL map.
openapi: Extension[dict[str, Any]] = Extension("luca.api:openapi_document")

# In the order create_app builds them: each may use the ones before it.
SERVICES: tuple[Extension[Any], ...] = (breakers, redis_gateway, cache, jobs, slots, limits, alerts, providers,
                                        dedup, budget_ledger)


def reopen_after_fork(app: Flask) -> None:
    """In a forked child (a gunicorn worker, an RQ work horse): new database connections and provider clients."""
    with app.app_context():
        db.engine.dispose(close=False)  # the parent's pooled connections stay the parent's
    providers.init_app(app)


def shutdown(app: Flask) -> None:
    """Release what app holds: job, alert and slot threads, provider and Redis clients, database connections."""
    for extension in reversed(SERVICES):  # a service is closed before the ones it uses
        close = getattr(extension.of(app), "close", None)
        if close is not None:
            close()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
