"""The scheduler on synthetic requests (no model)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mississippi_tools.engine.scheduler import FCFSScheduler
from mississippi_tools.errors import QueueFullError


@dataclass
class Item:
    request_id: str
    num_tiles: int = 1
    deadline: float | None = None
    cancelled: bool = False


def test_admits_in_order_up_to_the_batch_size() -> None:
    scheduler: FCFSScheduler[Item] = FCFSScheduler(max_batch_size=3, max_queue_size=10)
    items = [Item(str(i)) for i in range(5)]
    for item in items:
        scheduler.add(item)
    decision = scheduler.schedule(running=[], now=0.0)
    assert [i.request_id for i in decision.admit] == ["0", "1", "2"]
    assert scheduler.queue_depth == 2
    decision = scheduler.schedule(running=decision.admit[:2], now=0.0)
    assert [i.request_id for i in decision.admit] == ["3"]


def test_full_queue_is_refused_with_retry_after() -> None:
    scheduler: FCFSScheduler[Item] = FCFSScheduler(
        max_batch_size=1, max_queue_size=2, retry_after=3
    )
    scheduler.add(Item("a"))
    scheduler.add(Item("b"))
    with pytest.raises(QueueFullError) as caught:
        scheduler.add(Item("c"))
    assert caught.value.retry_after == 3
    assert caught.value.request_id == "c"


def test_expired_and_cancelled_leave_and_free_their_slots() -> None:
    scheduler: FCFSScheduler[Item] = FCFSScheduler(max_batch_size=2, max_queue_size=10)
    running = [Item("run-expired", deadline=5.0), Item("run-cancelled", cancelled=True)]
    waiting = [Item("wait-expired", deadline=1.0), Item("next")]
    for item in waiting:
        scheduler.add(item)
    decision = scheduler.schedule(running=running, now=10.0)
    assert {i.request_id for i in decision.expired} == {"run-expired", "wait-expired"}
    assert [i.request_id for i in decision.cancelled] == ["run-cancelled"]
    assert [i.request_id for i in decision.admit] == ["next"]


def test_admission_is_bounded_by_tiles_but_always_admits_one() -> None:
    scheduler: FCFSScheduler[Item] = FCFSScheduler(max_batch_size=8, max_admit_tiles=10)
    for n in (7, 7, 1):
        scheduler.add(Item(f"t{n}", num_tiles=n))
    assert [i.request_id for i in scheduler.schedule([], 0.0).admit] == ["t7"]
    assert [i.request_id for i in scheduler.schedule([], 0.0).admit] == ["t7", "t1"]
    big: FCFSScheduler[Item] = FCFSScheduler(max_admit_tiles=2)
    big.add(Item("huge", num_tiles=13))
    assert [i.request_id for i in big.schedule([], 0.0).admit] == ["huge"]


def test_drain_empties_the_queue() -> None:
    scheduler: FCFSScheduler[Item] = FCFSScheduler()
    scheduler.add(Item("a"))
    assert [i.request_id for i in scheduler.drain()] == ["a"]
    assert scheduler.queue_depth == 0
