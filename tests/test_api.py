"""The OpenAPI builder (luca.api) is generic: it documents what an endpoint declares, on any Flask app.

These build a bare app with a made-up blueprint, so nothing here is Luca's API; the document
of Luca's own endpoints is pinned in test_app.py and checked against the server in test_schema.py.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask
from pydantic import BaseModel

from luca.api import endpoint, endpoints, openapi_document
from luca.conversations.answers import sse
from luca.schemas import DeltaEvent


class Tick(BaseModel):
    """One tick."""

    n: int


class Done(BaseModel):
    """The last event."""

    total: int


class Order(BaseModel):
    """A body with a stream field, which by itself makes no event stream."""

    stream: bool = False


def document(*blueprints: Blueprint) -> dict[str, Any]:
    """The OpenAPI document of a bare app with blueprints registered under /x."""
    app = Flask(__name__)
    for bp in blueprints:
        app.register_blueprint(bp, url_prefix="/x")
    return openapi_document(app)


def test_an_event_stream_is_described_by_the_event_models_the_endpoint_declares() -> None:
    bp = Blueprint("clock", __name__)

    @bp.get("/ticks")
    @endpoint(response=Done, events={"tick": Tick, "done": Done}, events_description="Ticks, then done")
    def ticks() -> Done:
        """Count."""
        return Done(total=0)

    spec = document(bp)
    ok = spec["paths"]["/x/ticks"]["get"]["responses"]["200"]
    assert ok["description"] == "Ticks, then done"
    events = ok["content"]["text/event-stream"]["schema"]["oneOf"]
    assert [(e["properties"]["event"]["const"], e["properties"]["data"]["contentSchema"]) for e in events] == [
        ("tick", {"$ref": "#/components/schemas/Tick"}), ("done", {"$ref": "#/components/schemas/Done"})]
    assert events[0]["properties"]["data"]["contentMediaType"] == "application/json"
    assert spec["components"]["schemas"]["Tick"]["properties"]["n"]["type"] == "integer"


def test_a_body_with_a_stream_field_does_not_make_an_event_stream() -> None:
    bp = Blueprint("shop", __name__)

    @bp.post("/orders")
    @endpoint(body=Order, response=Done, status=201)
    def order(body: Order) -> Done:
        """Order."""
        return Done(total=1)

    assert set(document(bp)["paths"]["/x/orders"]["post"]["responses"]) == {"201", "400", "413", "415", "422"}


def test_a_blueprints_default_errors_are_documented_on_each_of_its_endpoints_only() -> None:
    guarded, open_ = Blueprint("guarded", __name__), Blueprint("open", __name__)
    guarded_endpoint = endpoints(errors=(401, 503))

    @guarded.get("/secret")
    @guarded_endpoint(response=Done, errors=(403,))
    def secret() -> Done:
        """Secret."""
        return Done(total=0)

    @open_.get("/public")
    @endpoint(response=Done)
    def public() -> Done:
        """Public."""
        return Done(total=0)

    paths = document(guarded, open_)["paths"]
    assert set(paths["/x/secret"]["get"]["responses"]) == {"200", "401", "403", "503"}
    assert set(paths["/x/public"]["get"]["responses"]) == {"200"}


def test_operation_ids_come_from_the_endpoint_name_and_method() -> None:
    bp = Blueprint("clock", __name__)

    @bp.get("/now", endpoint="current_time")
    @endpoint(response=Done)
    def now() -> Done:
        """Now."""
        return Done(total=0)

    assert document(bp)["paths"]["/x/now"]["get"]["operationId"] == "clock_current_time_get"


def test_an_answer_event_is_written_as_its_models_json_under_its_name() -> None:
    # ASCII-only JSON on one data line, as the stream has always been written.
    assert sse(DeltaEvent(text="Café\n€")) == 'event: delta\ndata: {"text":"Caf\\u00e9\\n\\u20ac"}\n\n'
