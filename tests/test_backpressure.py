"""The record budget: what bounds a scan's memory however many records the fleet holds.

Unit tests drive :class:`RecordBudget` directly with anyio tasks (no AWS involved); the scan-level
behaviour (a slow consumer, a small budget, a real fleet) is in test_scan.py.
"""

from __future__ import annotations

import anyio
import pytest

from fleetscan._backpressure import FIRST_ESTIMATE, FIRST_WINDOW, RecordBudget, Reservation


async def _admitted(budget: RecordBudget, count: int) -> list[int]:
    """Start ``count`` reservations; return the order in which they were admitted so far."""
    order: list[int] = []

    async def one(i: int) -> None:
        await budget.reserve()
        order.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(count):
            tg.start_soon(one, i)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    return order


async def test_calls_are_admitted_while_their_estimate_fits() -> None:
    budget = RecordBudget(cap=FIRST_ESTIMATE * 3)
    budget.answers = 100  # past the slow start
    assert await _admitted(budget, 5) == [0, 1, 2]
    # The two still waiting were cancelled: nothing of theirs is held.
    assert budget.used == FIRST_ESTIMATE * 3
    assert budget.outstanding == 3


async def test_the_writer_releasing_records_admits_waiters_in_order() -> None:
    budget = RecordBudget(cap=FIRST_ESTIMATE * 2)
    budget.answers = 100
    first = await budget.reserve()
    second = await budget.reserve()
    admitted: list[str] = []

    async def waiter(name: str) -> None:
        await budget.reserve()
        admitted.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, "a")
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, "b")
        await anyio.wait_all_tasks_blocked()
        assert admitted == []
        budget.settle(first, 10)  # the answer was smaller than reserved: room for "a"
        budget.release(10)  # and written
        await anyio.wait_all_tasks_blocked()
        assert admitted == ["a"]
        budget.settle(second, 0)
        await anyio.wait_all_tasks_blocked()
        assert admitted == ["a", "b"]


async def test_the_estimate_grows_to_the_largest_answer() -> None:
    budget = RecordBudget(cap=1000)
    reserved = await budget.reserve()
    budget.settle(reserved, 400)
    assert budget.estimate == 400
    assert budget.used == 400
    budget.release(400)
    budget.answers = 100
    # Room for two answers of the size seen, not for thirty of the first guess.
    assert len(await _admitted(budget, 10)) == 2


async def test_an_answer_larger_than_the_budget_still_goes_through_alone() -> None:
    budget = RecordBudget(cap=10)
    reserved = await budget.reserve()  # nothing held: always admitted
    budget.settle(reserved, 500)
    assert budget.used == 500
    assert await _admitted(budget, 3) == []  # nothing else while it waits for the writer
    budget.release(500)
    assert budget.used == 0
    assert len(await _admitted(budget, 1)) == 1


async def test_slow_start_limits_the_first_wave_until_answers_teach_the_estimate() -> None:
    budget = RecordBudget(cap=100_000)
    assert len(await _admitted(budget, 100)) == FIRST_WINDOW
    # Each answer lets two more calls out.
    budget.settle(FIRST_ESTIMATE, FIRST_ESTIMATE)
    assert budget.outstanding == FIRST_WINDOW - 1
    assert len(await _admitted(budget, 100)) == 3


async def test_a_call_that_brings_nothing_back_returns_its_reservation() -> None:
    budget = RecordBudget(cap=100)
    reservation = Reservation(budget)
    await reservation.reserve()
    await reservation.reserve()  # a retry: still one reservation
    assert budget.used == FIRST_ESTIMATE
    assert budget.outstanding == 1
    reservation.cancel()
    reservation.cancel()  # idempotent
    assert (budget.used, budget.outstanding) == (0, 0)


async def test_a_cancelled_call_holds_nothing_even_if_it_was_just_admitted() -> None:
    budget = RecordBudget(cap=FIRST_ESTIMATE)
    held = await budget.reserve()

    async def call() -> None:  # as a gateway task holds its reservation
        reservation = Reservation(budget)
        try:
            await reservation.reserve()
            await anyio.sleep_forever()
        finally:
            reservation.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        budget.settle(held, 0)  # admits the waiting call...
        tg.cancel_scope.cancel()  # ...which is cancelled before it runs
    assert (budget.used, budget.outstanding) == (0, 0)


async def test_room_waits_only_while_the_budget_is_exhausted() -> None:
    budget = RecordBudget(cap=5)
    budget.hold(5)
    woke = anyio.Event()

    async def wait_for_room() -> None:
        await budget.room()
        woke.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_for_room)
        await anyio.wait_all_tasks_blocked()
        assert not woke.is_set()
        budget.release(1)
        with anyio.fail_after(5):
            await woke.wait()


def test_a_budget_needs_room() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        RecordBudget(0)
