"""A bare Flask app that serves the JSON of a cached conversation list: the ceiling of this stack.

Run under the same gunicorn config as Luca (gunicorn bench.bare_app:app -c gunicorn.conf.py).
"""
import os

from flask import Flask, Response

BODY = open(os.environ["BENCH_BARE_BODY"], "rb").read()  # noqa: SIM115 - read once at import
app = Flask(__name__)


@app.get("/conversations")
def conversations() -> Response:
    """The same bytes Luca serves from its cache, with nothing else done."""
    return Response(BODY, mimetype="application/json")
