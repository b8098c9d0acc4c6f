"""Luca under gunicorn with the project's worker config: streamed answers arrive as they are written."""
from __future__ import annotations

import http.client
import json
from pathlib import Path

from tests.processes import flask_command, gunicorn, luca_env


def test_streamed_deltas_reach_the_client_before_the_answer_is_finished(tmp_path: Path, servers) -> None:
    primary, _ = servers
    primary.configure(chunk_delay_ms=100)
    env = luca_env(DATABASE_URL=f"sqlite:///{tmp_path / 'luca.db'}", WEB_CONCURRENCY="2",
                   AI_PROVIDERS="primary", PRIMARY_BASE_URL=primary.url, PRIMARY_MODEL="primary-model")
    flask_command(env, "db", "upgrade")
    token = flask_command(env, "users", "create", "gunicorn@example.com").strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    with gunicorn(env) as (base, _process):
        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("POST", "/api/conversations", body=json.dumps({}), headers=headers)
        conversation = json.loads(conn.getresponse().read())
        conn.request("POST", f"/api/conversations/{conversation['id']}/messages",
                     body=json.dumps({"content": "stream through gunicorn please", "stream": True}), headers=headers)
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type").startswith("text/event-stream")

        seen_first_delta_while_streaming = None
        events = []
        buffer = b""
        while True:
            chunk = response.read1(65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                name = block.split(b"\n")[0].removeprefix(b"event: ").decode()
                events.append(name)
                if name == "delta" and seen_first_delta_while_streaming is None:
                    # The provider is still writing the answer when its first piece reaches us.
                    seen_first_delta_while_streaming = primary.stats()["completed"] == 0
        conn.close()

    assert events[0] == "start" and events[-1] == "end" and events.count("delta") >= 3
    assert seen_first_delta_while_streaming is True
