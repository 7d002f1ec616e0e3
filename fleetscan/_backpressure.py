"""How many records a scan may hold in memory at once.

A scan's memory is its records: those in answers being parsed, in batches being built, and in
batches waiting for the writer (which is slower than the API when answers are large). Counting
only the records already sent is not enough: every call in flight may bring a whole gateway's
worth back at once, so 256 calls of 400 volumes each overshoot any cap on what was sent. So a
call reserves the records it may bring back just before it is sent, and the writer gives them
back once they are written.

What a call may bring back is not known in advance. The estimate is the largest answer seen so
far (at least :data:`FIRST_ESTIMATE`, AWS's quota of volumes per cached gateway), so once a fleet
has shown how large its gateways are, the calls admitted together cannot bring back much more
than the cap. Before that, a slow start (as in TCP) keeps the first wave small: the calls out at
once without an answer are at most :data:`FIRST_WINDOW` plus twice the answers seen, so a fleet
of gateways ten times larger than the estimate teaches it after a few answers, not after
hundreds of calls have been admitted at the wrong size. Calls are admitted in the order they
asked.
"""

from __future__ import annotations

from collections import deque

import anyio

#: AWS allows 32 volumes per cached gateway; one more record is the gateway's own.
FIRST_ESTIMATE = 33
#: Calls admitted before any answer is known.
FIRST_WINDOW = 8


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.granted = 0


class RecordBudget:
    """A weighted, first-come first-served semaphore over records in memory."""

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError("a record budget needs room for at least one record")
        self.cap = cap
        #: Records reserved or held, not yet written.
        self.used = 0
        self.peak = 0
        self.estimate = FIRST_ESTIMATE
        #: Reservations not yet settled, and answers settled so far (the slow start's window).
        self.outstanding = 0
        self.answers = 0
        self._waiters: deque[_Waiter] = deque()
        self._room = anyio.Event()
        self._room_waiters = 0

    async def room(self) -> None:
        """Wait until the budget is not exhausted (nothing is held after it).

        For work that only creates more waiting calls: it need not queue behind them.
        """
        while self.used >= self.cap:
            self._room_waiters += 1
            try:
                await self._room.wait()
            finally:
                self._room_waiters -= 1

    async def reserve(self) -> int:
        """Reserve room for one call's records; return how many were reserved.

        A call is always admitted when nothing else is held, so one answer larger than the whole
        budget still goes through (alone) instead of waiting forever.
        """
        if not self._waiters and self._fits():
            return self._take()
        waiter = _Waiter()
        self._waiters.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self.cancel(waiter.granted)
            else:
                self._waiters.remove(waiter)
            raise
        return waiter.granted

    def settle(self, reserved: int, actual: int) -> None:
        """The call brought ``actual`` records back: hold those instead of its reservation."""
        self.estimate = max(self.estimate, actual)
        self.outstanding -= 1
        self.answers += 1
        self.used += actual - reserved
        self.peak = max(self.peak, self.used)
        self._grant()  # room may be free, and the slow start's window has grown

    def hold(self, count: int) -> None:
        """Hold ``count`` more records (negative: fewer) without waiting: records that exist."""
        self.used += count
        self.peak = max(self.peak, self.used)
        if count < 0:
            self._grant()

    def release(self, count: int) -> None:
        """``count`` records were written: their memory is free again."""
        self.hold(-count)

    def cancel(self, reserved: int) -> None:
        """A reserved call brought nothing back (it failed, or the scan stopped)."""
        self.outstanding -= 1
        self.hold(-reserved)

    def _fits(self) -> bool:
        if self.used == 0:
            return True
        return (
            self.used + self.estimate <= self.cap
            and self.outstanding < FIRST_WINDOW + 2 * self.answers
        )

    def _take(self) -> int:
        self.outstanding += 1
        self.used += self.estimate
        self.peak = max(self.peak, self.used)
        return self.estimate

    def _grant(self) -> None:
        while self._waiters and self._fits():
            waiter = self._waiters.popleft()
            waiter.granted = self._take()
            waiter.event.set()
        if self.used < self.cap and self._room_waiters:
            self._room.set()
            self._room = anyio.Event()


class Reservation:
    """One call's claim on a :class:`RecordBudget`, taken once however often the call is retried.

    Taken when the call is about to be sent (after its rate-limit token), so calls waiting for
    their turn hold nothing; settled to the records the answer produced, which the writer then
    releases; cancelled if the call brings nothing back.
    """

    __slots__ = ("_budget", "held")

    def __init__(self, budget: RecordBudget) -> None:
        self._budget = budget
        self.held = 0

    async def reserve(self) -> None:
        if not self.held:
            self.held = await self._budget.reserve()

    def settle(self, actual: int) -> None:
        """``actual`` records exist now: from here on the batch holds them, not this claim."""
        self._budget.settle(self.held, actual)
        self.held = 0

    def cancel(self) -> None:
        if self.held:
            self._budget.cancel(self.held)
            self.held = 0
