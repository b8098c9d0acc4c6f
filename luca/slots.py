"""Answer slots: at most AI_MAX_CONCURRENT_PER_USER answers in flight per user, across processes.

Each answer in flight (whole or streamed, a send or a retry) holds a gunicorn thread for the
provider's whole answer time; a slot per answer bounds how many threads one user can hold.
This is not in luca/limits.py: a rate limit counts requests in a time window (Flask-Limiter),
whereas a slot is taken and given back, and must free itself when its holder dies, which takes
leases, a renewer and a fallback of its own.

With Redis (REDIS_URL, through the `redis` breaker), a user's slots are a sorted set
`<REDIS_KEY_PREFIX>slots:<user_id>`: member = a random slot id, score = its lease's expiry in
milliseconds of Redis's own clock (so the processes' clocks do not matter). Cost on the hot path:
taking a slot is one round trip (a Lua script: drop expired leases, count, add), giving it back
is one more (ZREM; after a whole answer it rides the answer's cache bump, in
answers.release_after_answer). Off the hot path, while a process holds any slot, one thread of it
renews all of them every AI_SLOT_LEASE / 3 seconds in one round trip, so an answer keeps its slot
however long it runs, and the slots of a process that died free themselves within AI_SLOT_LEASE
seconds.

Every process also counts the slots it holds per user. Without Redis, or while Redis fails or
its breaker is open, that count alone decides: the cap then holds per process, and no request is
refused because Redis is down. A slot taken that way is not in Redis, so for the rest of an
outage each process admits up to the cap on its own.
"""
from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from flask import Flask

from luca.extensions import redis_gateway
from luca.redis import REDIS_ERRORS

log = logging.getLogger(__name__)

# KEYS[1]: the user's slots; ARGV: the cap, the lease in ms, the new slot's id. 1 taken, 0 full.
ACQUIRE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: slot sets; ARGV[1]: the lease in ms, ARGV[i + 1]: the slot id in KEYS[i]; ARGV[#KEYS + 2]:
# '1' to put back slots that are gone. Returns the positions of slots that were gone.
# Renewing never re-adds (XX): a slot given back while this ran must stay given back.
RENEW = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local lease = tonumber(ARGV[1])
local put_back = ARGV[#KEYS + 2] == '1'
local gone = {}
for i, key in ipairs(KEYS) do
  if redis.call('ZADD', key, 'XX', 'CH', now + lease, ARGV[i + 1]) == 0 then
    if put_back then redis.call('ZADD', key, now + lease, ARGV[i + 1]) end
    gone[#gone + 1] = i
  end
  redis.call('PEXPIRE', key, lease)
end
return gone
"""


@dataclass(eq=False)
class Slot:
    """One answer's place among its user's; release() gives it back (more calls do nothing)."""

    owner: AnswerSlots
    user_id: int
    member: str
    shared: bool = False  # held in Redis too, and renewed there
    released: bool = False

    def release(self, pipeline: Any = None) -> None:
        """Give the slot back (in Redis on pipeline, when given, for its caller to send)."""
        self.owner.release(self, pipeline)


class AnswerSlots:
    """The per-user answer slots of one app: leases in Redis, counted in this process as well."""

    def __init__(self, app: Flask) -> None:
        self.gateway = redis_gateway.of(app)
        self.redis = self.gateway.client
        self.limit: int = app.config["AI_MAX_CONCURRENT_PER_USER"]  # 0: no cap
        self.lease_ms = max(1, int(app.config["AI_SLOT_LEASE"] * 1000))
        self._held: Counter[int] = Counter()
        self._shared: dict[str, Slot] = {}
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._stop = threading.Event()
        self._acquire = self.redis.register_script(ACQUIRE) if self.redis is not None else None
        self._renew = self.redis.register_script(RENEW) if self.redis is not None else None

    def key(self, user_id: int) -> str:
        """The Redis key of the user's slots."""
        return self.gateway.key("slots", user_id)

    def in_use(self, user_id: int) -> int:
        """How many of the user's slots this process holds."""
        with self._lock:
            return self._held[user_id]

    def acquire(self, user_id: int) -> Slot | None:
        """A slot for one answer of the user, or None when all of theirs are in use."""
        with self._lock:  # counted here first, so this process's threads never overshoot between them
            if self.limit and self._held[user_id] >= self.limit:
                return None
            self._held[user_id] += 1
        slot = Slot(self, user_id, uuid.uuid4().hex)
        if self.redis is None or not self.limit:
            return slot
        try:
            taken = self._acquire(keys=[self.key(user_id)], args=[self.limit, self.lease_ms, slot.member])
        except REDIS_ERRORS as exc:
            log.debug("[Slots] Redis failed (%s); counting user %s's slots in this process", type(exc).__name__,
                      user_id)
            return slot
        if not taken:
            self._forget(slot)
            return None
        with self._lock:
            slot.shared = True
            self._shared[slot.member] = slot
            if self._renewer is None or not self._renewer.is_alive():
                self._renewer = threading.Thread(target=self._renew_while_held, name="luca-slot-renewer",
                                                 daemon=True)
                self._renewer.start()
        return slot

    def release(self, slot: Slot, pipeline: Any = None) -> None:
        """Give a slot back, here and in Redis (queued on pipeline, when given); a Redis failure leaves it to its
        lease."""
        shared = self._forget(slot)
        if shared and pipeline is not None:
            pipeline.zrem(self.key(slot.user_id), slot.member)
        elif shared and self.redis is not None:
            try:
                self.redis.zrem(self.key(slot.user_id), slot.member)
            except REDIS_ERRORS as exc:
                log.debug("[Slots] a slot could not be given back (%s); its lease ends it", type(exc).__name__)

    def _forget(self, slot: Slot) -> bool:
        """Stop counting a slot in this process; whether it was held in Redis."""
        with self._lock:
            if slot.released:
                return False
            slot.released = True
            self._held[slot.user_id] -= 1
            if self._held[slot.user_id] <= 0:
                del self._held[slot.user_id]
            return self._shared.pop(slot.member, None) is not None

    def _renew_while_held(self) -> None:
        """Renew every slot this process holds in Redis, until it holds none (or the app shuts down)."""
        while not self._stop.wait(self.lease_ms / 3000):
            with self._lock:
                held = list(self._shared.values())
                if not held:
                    self._renewer = None
                    return
            try:
                gone = self._renew_slots(held, put_back=False)
                if gone:  # their leases ran out while Redis was unreachable; the answers still run
                    with self._lock:  # held, so that none of them is given back meanwhile
                        self._renew_slots([s for s in gone if not s.released], put_back=True)
            except REDIS_ERRORS as exc:
                log.debug("[Slots] renewing %d slots failed (%s)", len(held), type(exc).__name__)

    def _renew_slots(self, slots: list[Slot], *, put_back: bool) -> list[Slot]:
        """One round trip: extend the slots' leases (and put back the gone ones); the slots that were gone."""
        if not slots:
            return []
        assert self.redis is not None and self._renew is not None
        gone = self._renew(keys=[self.key(s.user_id) for s in slots],
                           args=[self.lease_ms, *(s.member for s in slots), "1" if put_back else "0"])
        return [slots[int(i) - 1] for i in gone]

    def close(self) -> None:
        """Stop renewing (the app shuts down; its leases end on their own)."""
        self._stop.set()
        with self._lock:
            renewer = self._renewer
        if renewer is not None:
            renewer.join()
