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

from luca.errors import APIError

# How each kind of key column is written into and read back from a cursor.
CODECS: dict[type, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    bool: (bool, lambda v: v if isinstance(v, bool) else _bad()),
    int: (int, lambda v: v if isinstance(v, int) and not isinstance(v, bool) else _bad()),
    datetime: (lambda v: v.isoformat(), datetime.fromisoformat),
    uuid.UUID: (str, uuid.UUID),
}


def _bad() -> Any:
    raise ValueError("bad cursor value")


def invalid_cursor() -> APIError:
    """The error for a cursor that this API did not write."""
    return APIError(400, "invalid_cursor", "the cursor is not valid; start again without one")


def encode_cursor(values: Sequence[Any]) -> str:
    """Turn the sort key of the last row on a page into an opaque cursor."""
    payload = [CODECS[type(v)][0](v) for v in values]
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, types: Sequence[type]) -> list[Any]:
    """Read a cursor back into typed key values; 400 when it was not written by encode_cursor."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        if not isinstance(payload, list) or len(payload) != len(types):
            raise ValueError("wrong shape")
        return [CODECS[t][1](v) for t, v in zip(types, payload)]
    except (ValueError, TypeError, UnicodeDecodeError, json.JSONDecodeError):
        raise invalid_cursor() from None


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
