"""Server-Sent Events bodies, as the answer stream sends them, split into events."""
from __future__ import annotations

import json


def parse_events(text: str) -> list[tuple[str, dict]]:
    """Split an SSE body into (event, data) pairs."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((fields["event"], json.loads(fields["data"])))
    return events
