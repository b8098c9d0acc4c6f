"""Keyset (cursor) pagination: every page costs what the first one costs."""
from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, tuple_
from sqlalchemy.orm import InstrumentedAttribute

from luca.errors import InvalidCursor

# The range of a key column that holds an integer (BIGINT on PostgreSQL, INTEGER on SQLite).
INT_RANGE = range(-(2**63), 2**63)


def _int(value: Any) -> int:
    if type(value) is not int or value not in INT_RANGE:  # bool is an int subclass: refused here too
        raise ValueError("not a 64-bit integer")
    return value


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise ValueError("not a boolean")
    return value


def _datetime(value: Any) -> datetime:
    if type(value) is not str:
        raise ValueError("not a timestamp")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is not None:
        raise ValueError("timestamps are naive UTC")
    return parsed


def _uuid(value: Any) -> uuid.UUID:
    if type(value) is not str:
        raise ValueError("not a UUID")
    return uuid.UUID(value)


# How each kind of key column is written into and read back from a cursor. Reading checks the
# JSON type and range; decode_cursor then insists that the value writes back to the same JSON.
CODECS: dict[type, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    bool: (bool, _bool),
    int: (int, _int),
    datetime: (lambda v: v.isoformat(), _datetime),
    uuid.UUID: (str, _uuid),
}


def encode_cursor(values: Sequence[Any]) -> str:
    """Turn the sort key of the last row on a page into an opaque cursor."""
    payload = [CODECS[type(v)][0](v) for v in values]
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, types: Sequence[type]) -> list[Any]:
    """Read a cursor back into typed key values; InvalidCursor unless encode_cursor wrote exactly this."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        if not isinstance(payload, list) or len(payload) != len(types):
            raise ValueError("wrong shape")
        values = [CODECS[t][1](v) for t, v in zip(types, payload)]
        if [CODECS[t][0](v) for t, v in zip(types, values)] != payload:
            raise ValueError("not written by encode_cursor")  # e.g. "{...}" UUIDs, "2024-01-01" days
        return values
    except (ValueError, TypeError, OverflowError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise InvalidCursor() from None


def keyset_page(
    stmt: Select[Any],
    keys: Sequence[InstrumentedAttribute[Any]],
    types: Sequence[type],
    *,
    limit: int,
    cursor: str | None,
    descending: bool,
) -> tuple[Select[Any], Callable[[Sequence[Any]], tuple[list[Any], str | None]]]:
    """Order stmt by keys (all one direction), resume after cursor, fetch one extra row.

    Returns the statement to run and a function that turns its rows into
    (items, next_cursor).
    """
    if cursor:
        after = decode_cursor(cursor, types)
        row, bound = tuple_(*keys), tuple_(*after)
        stmt = stmt.where(row < bound if descending else row > bound)
    stmt = stmt.order_by(*(k.desc() if descending else k.asc() for k in keys)).limit(limit + 1)

    def finish(rows: Sequence[Any]) -> tuple[list[Any], str | None]:
        items = list(rows[:limit])
        if len(rows) <= limit:
            return items, None
        last = items[-1]
        return items, encode_cursor([getattr(last, k.key) for k in keys])

    return stmt, finish
