"""Whether a child still answers (Issue 9 item 3): missed answers in a row, and how long it has been silent.

Sans-I/O bookkeeping: the relay reports answers and call timeouts, the supervisor's pinger reports pings; after
`limit` misses in a row `tripped` is set and the supervisor restarts the child. Any answer resets the count.
"""

import asyncio

from mcp_bastion.supervisor.clock import Clock


class Liveness:
    """Missed answers in a row of one child, and when it last said anything."""

    def __init__(self, limit: int, clock: Clock) -> None:
        self.limit = limit
        self.missed = 0
        self.tripped = asyncio.Event()
        self._clock = clock
        self.last_heard = clock.now()

    def reset(self) -> None:
        """A new child: nothing missed yet, heard just now."""
        self.missed = 0
        self.tripped.clear()
        self.last_heard = self._clock.now()

    def heard(self) -> None:
        """The child wrote a message (any message: it is not stuck)."""
        self.last_heard = self._clock.now()

    def answered(self) -> None:
        """The child answered a request: the count of misses starts again."""
        self.missed = 0

    def unanswered(self) -> None:
        """A ping or a call was not answered in time."""
        self.missed += 1
        if self.missed >= self.limit:
            self.tripped.set()

    def quiet_s(self) -> float:
        """Seconds since the child last wrote anything."""
        return self._clock.now() - self.last_heard
