"""The router's byte budget: one count of the request, response and copy bytes it holds.

Two kinds of claim share it:

- new work (a request body, a shadow or mirror copy, a feedback body, a copy's answer) is
  admitted at once or refused, and only up to `limit - headroom`;
- the answer of admitted work (a backend response to a request the router took) may use the
  whole limit, and when it does not fit it waits, first come first served, while its upstream
  connection is not read, until earlier answers have been sent and their requests have ended.
  It is claimed whole: its Content-Length, or for a chunked answer the headroom (the most an
  answer may wait for), cut to its real size once it has arrived (upstream.py).

Why the split: with one shared limit, admitted request bodies alone could fill it, and then every
answer to them was refused (503 `over_budget`) after the backend had done the work, so callers
retried into the same wall. On a loaded 2-core runner, 8 held 1 MiB requests with an 8 MiB budget
all got 503 once their 1 MiB answers arrived together (tests/integration/router/
test_router_byte_budget.py). Requests now never hold more than `limit - headroom`, and an answer
that waits is at most `headroom` (max_response_bytes), so every waiting answer gets room as the
ones before it are sent: an admitted request receives its answer (or times out), like a proxy's
flow control, instead of being starved by other admitted requests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class ByteBudget:
    """Bytes held now (`used`) against `limit`; `headroom` of it is kept for answers."""

    def __init__(self, limit: int, headroom: int) -> None:
        self.limit = limit
        self.headroom = min(headroom, limit // 2)
        """max_response_bytes, but at most half the limit: requests always get the other half.
        An answer larger than this never waits (it is refused when it does not fit)."""
        self.used = 0
        self._waiting: deque[tuple[int, Callable[[], None]]] = deque()

    @property
    def waiting(self) -> int:
        """Answers waiting for room now."""
        return len(self._waiting)

    def admit(self, size: int) -> bool:
        """Count `size` bytes of new work if they fit below `limit - headroom`; never waits."""
        if self.used + size > self.limit - self.headroom:
            return False
        self.used += size
        return True

    def take(self, size: int) -> bool:
        """Count `size` bytes of an answer beyond what it claimed whole (a chunked answer larger than
        the headroom) if they fit in the whole limit, behind any waiting answer; never waits (partial
        claims that wait, each holding part of an answer, could wait for each other forever)."""
        if self._waiting or self.used + size > self.limit:
            return False
        self.used += size
        return True

    def claim(self, size: int, granted: Callable[[], None]) -> bool | None:
        """Count `size` bytes of an answer of known length: True when counted now, None when it
        waits (`granted` is called once it is counted; `cancel` withdraws it), False when it can
        never wait (larger than the headroom) and does not fit now."""
        if not self._waiting and self.used + size <= self.limit:
            self.used += size
            return True
        if size > self.headroom:
            return False
        self._waiting.append((size, granted))
        return None

    def cancel(self, granted: Callable[[], None]) -> None:
        """Withdraw a waiting claim (its exchange ended first); then others may fit."""
        for entry in self._waiting:
            if entry[1] == granted:  # bound methods are equal, never identical
                self._waiting.remove(entry)
                break
        self._grant()

    def release(self, size: int) -> None:
        self.used -= size
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self.used + self._waiting[0][0] <= self.limit:
            size, granted = self._waiting.popleft()
            self.used += size
            granted()
