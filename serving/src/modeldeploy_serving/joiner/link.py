"""What the joiner's store knows of its database connection, and when it may try a new one.

Pure: every transition takes the time (a monotonic clock) and, for the backoff, a jitter in [0, 1);
the store (store.py) does the I/O and keeps the current `Link`. Decided here, once:

- a lost connection is tried again at once (a killed backend or a failover: the database is there,
  the operation in hand is retried on the new connection and the caller never notices);
- while new connections fail, the next attempt waits `ReconnectPolicy.delay` (exponential, capped,
  jittered), and every operation meanwhile is refused at once, without touching the database, with
  the seconds until the next attempt (the HTTP answer's Retry-After): a flood of requests during an
  outage costs the database one connection attempt per delay, not one per request;
- readiness asks the database only when nothing did for `interval` seconds (`needs_check`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    first_seconds: float = 0.5
    """Wait after the first failed reconnect (the one made at once when the connection was lost)."""
    max_seconds: float = 10.0
    """Longest wait between attempts: a database back after a restart (5-30 s for PostgreSQL) is used
    again within this, and one attempt per 10 s is nothing to a database that is coming up."""
    factor: float = 2.0

    def delay(self, failures: int, jitter: float) -> float:
        """Wait after the `failures`-th failed attempt (1, 2, ...): first * factor^(failures-1), capped,
        then scaled into [1/2, 1] of that by `jitter` so that joiners sharing a database spread out."""
        try:
            step = min(self.max_seconds, self.first_seconds * self.factor ** max(0, failures - 1))
        except OverflowError:  # an outage of hours: 2.0 ** 1024 is no float (found by a property test)
            step = self.max_seconds
        return step * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))


@dataclass(frozen=True, slots=True)
class Link:
    up: bool = True
    down_since: float | None = None
    """When the connection was lost (for the log line at the end of the outage)."""
    failures: int = 0
    """Failed reconnect attempts in this outage."""
    next_attempt: float = 0.0
    """While down: no new connection is tried before this."""
    last_contact: float = -math.inf
    """When the database last answered (any operation or check)."""

    # -- transitions ---------------------------------------------------------------------------
    def contact(self, now: float) -> Link:
        return replace(self, last_contact=now)

    def lost(self, now: float) -> Link:
        """The connection broke. The first new one is tried at once. Already down: unchanged."""
        if not self.up:
            return self
        return replace(self, up=False, down_since=now, failures=0, next_attempt=now)

    def attempt_failed(self, now: float, policy: ReconnectPolicy, jitter: float) -> Link:
        failures = self.failures + 1
        down_since = now if self.down_since is None else self.down_since
        return replace(
            self,
            up=False,
            down_since=down_since,
            failures=failures,
            next_attempt=now + policy.delay(failures, jitter),
        )

    def reconnected(self, now: float) -> Link:
        return Link(up=True, last_contact=now)

    # -- questions ------------------------------------------------------------------------------
    def may_attempt(self, now: float) -> bool:
        return now >= self.next_attempt

    def retry_after(self, now: float) -> int:
        """Whole seconds a caller should wait (HTTP Retry-After): until the next attempt, at least 1."""
        return max(1, math.ceil(self.next_attempt - now))

    def needs_check(self, now: float, interval: float) -> bool:
        """Readiness: ask the database (a new connection when down and due) only when nothing did for
        `interval` seconds; otherwise the last answer stands."""
        if not self.up:
            return self.may_attempt(now)
        return now - self.last_contact >= interval
