"""The request mix for locust: list, open, page, search, and send (a share of them common first questions).

Run by bench.mix (headless). Reads BENCH_DATA (tokens and conversation ids per user),
BENCH_COMMON_SHARE, BENCH_THINK, BENCH_WEIGHTS, and writes every request's latency to
BENCH_RAW when the run stops.
"""
from __future__ import annotations

import itertools
import json
import os
import random
import uuid

from locust import FastHttpUser, between, events, task

DATA = json.loads(open(os.environ["BENCH_DATA"]).read())
COMMON = DATA["common_questions"]
COMMON_SHARE = float(os.environ.get("BENCH_COMMON_SHARE", "0.5"))
THINK = float(os.environ.get("BENCH_THINK", "1"))
WEIGHTS = json.loads(os.environ.get("BENCH_WEIGHTS", '{"list": 35, "open": 20, "page": 20, "search": 10, "send": 15}'))
WORDS = DATA["search_words"]
RAW: list[tuple[str, float, int]] = []
ACCOUNTS = itertools.count()


@events.request.add_listener
def record(request_type: str, name: str, response_time: float, response_length: int, response: object = None,
           exception: object = None, **kwargs: object) -> None:
    """Keep every latency, to compute percentiles over any group of requests."""
    status = getattr(response, "status_code", 0) or 0
    RAW.append((name, response_time, status))


@events.test_stop.add_listener
def dump(**kwargs: object) -> None:
    """Write the raw latencies for bench.mix."""
    with open(os.environ["BENCH_RAW"], "w") as out:
        json.dump(RAW, out)


class MixUser(FastHttpUser):
    """One user of Luca: signs in with a seeded token and works through the mix."""

    wait_time = between(THINK * 0.5, THINK * 1.5)

    def on_start(self) -> None:
        """Take the next seeded account: each locust user is its own Luca user while accounts last."""
        user = DATA["users"][next(ACCOUNTS) % len(DATA["users"])]
        self.headers = {"Authorization": f"Bearer {user['token']}"}
        self.conversations = list(user["conversations"])

    @task(WEIGHTS["list"])
    def list_conversations(self) -> None:
        """The conversation list, first page."""
        self.client.get("/api/conversations?limit=20", headers=self.headers, name="list")

    @task(WEIGHTS["open"])
    def open_conversation(self) -> None:
        """One conversation."""
        self.client.get(f"/api/conversations/{random.choice(self.conversations)}", headers=self.headers,
                        name="open")

    @task(WEIGHTS["page"])
    def page_messages(self) -> None:
        """The newest page of a conversation's messages."""
        self.client.get(f"/api/conversations/{random.choice(self.conversations)}/messages?limit=50",
                        headers=self.headers, name="page")

    @task(WEIGHTS["search"])
    def search(self) -> None:
        """Full-text search for a word."""
        self.client.get(f"/api/search?q={random.choice(WORDS)}", headers=self.headers, name="search")

    @task(WEIGHTS["send"])
    def send(self) -> None:
        """A common first question in a new conversation, or a follow-up of one's own."""
        if random.random() < COMMON_SHARE:
            with self.client.post("/api/conversations", json={}, headers=self.headers, name="create",
                                  catch_response=True) as response:
                if response.status_code != 201:
                    response.failure(f"create: {response.status_code}")
                    return
                conversation = response.json()["id"]
            self.conversations.append(conversation)
            question = random.choice(COMMON)
        else:
            conversation = random.choice(self.conversations)
            question = f"Follow-up {uuid.uuid4().hex[:8]}: and what about {random.choice(WORDS)}?"
        self.client.post(f"/api/conversations/{conversation}/messages", json={"content": question},
                         headers=self.headers, name="send")
