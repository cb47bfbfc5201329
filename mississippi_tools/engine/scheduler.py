"""Which requests run: a bounded waiting queue and a running batch that changes every step.

The engine loop calls :meth:`Scheduler.schedule` at every step boundary (before each decoding
step). New requests are admitted there, so they join the running batch as soon as a slot is free
(continuous batching); requests past their deadline or cancelled leave there, freeing their slot.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from mississippi_tools.errors import QueueFullError

__all__ = ["FCFSScheduler", "Schedulable", "Scheduler", "SchedulerDecision"]


class Schedulable(Protocol):
    """What the scheduler needs to know about a request (read-only)."""

    @property
    def request_id(self) -> str:
        """The request's id."""
        ...

    @property
    def deadline(self) -> float | None:
        """Monotonic time after which the request fails, or ``None``."""
        ...

    @property
    def cancelled(self) -> bool:
        """Whether the caller cancelled it."""
        ...

    @property
    def num_tiles(self) -> int:
        """Tiles the request's images need (admission bounds tiles per step)."""
        ...


S = TypeVar("S", bound=Schedulable)


@dataclass
class SchedulerDecision(Generic[S]):
    """What to do at this step boundary.

    Attributes:
        admit: Waiting requests to encode, prefill and add to the running batch, in order.
        expired: Requests (waiting or running) whose deadline has passed.
        cancelled: Requests (waiting or running) cancelled by their caller.
    """

    admit: list[S] = field(default_factory=list)
    expired: list[S] = field(default_factory=list)
    cancelled: list[S] = field(default_factory=list)


class Scheduler(ABC, Generic[S]):
    """Decides admission; thread-safe for :meth:`add` from callers' threads."""

    @abstractmethod
    def add(self, item: S) -> None:
        """Queue a new request (called from the submitting thread).

        Raises:
            QueueFullError: The waiting queue is full.
        """

    @abstractmethod
    def schedule(self, running: list[S], now: float) -> SchedulerDecision[S]:
        """Called by the engine loop at each step boundary with the current running batch."""

    @abstractmethod
    def wait_for_work(self, timeout: float | None) -> None:
        """Block the idle engine loop until a request arrives (or ``timeout`` passes)."""

    @abstractmethod
    def wake(self) -> None:
        """Wake the loop (a request was cancelled, or the engine is stopping)."""

    @abstractmethod
    def drain(self) -> list[S]:
        """Remove and return every waiting request (engine shutdown)."""

    @property
    @abstractmethod
    def queue_depth(self) -> int:
        """Requests waiting to be admitted."""


class FCFSScheduler(Scheduler[S]):
    """First come, first served, with a bounded queue and a bounded batch.

    Args:
        max_batch_size: Requests decoding together.
        max_queue_size: Requests waiting beyond the batch before new ones are refused.
        max_admit_tiles: Tiles encoded in one admission round (bounds how long the running
            batch waits for newcomers' vision and prefill). At least one request is always
            admitted when a slot is free.
        retry_after: Seconds suggested to callers refused with a full queue.
    """

    def __init__(
        self,
        *,
        max_batch_size: int = 8,
        max_queue_size: int = 64,
        max_admit_tiles: int = 14,
        retry_after: float = 1.0,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.max_queue_size = max_queue_size
        self.max_admit_tiles = max_admit_tiles
        self.retry_after = retry_after
        self._waiting: deque[S] = deque()
        self._condition = threading.Condition()

    def add(self, item: S) -> None:
        """Queue ``item`` or refuse it when the queue is full."""
        with self._condition:
            if len(self._waiting) >= self.max_queue_size:
                raise QueueFullError(
                    f"the engine's queue is full ({self.max_queue_size} requests waiting); "
                    f"retry in {self.retry_after:.0f} s or raise max_queue_size",
                    retry_after=self.retry_after,
                    request_id=item.request_id,
                )
            self._waiting.append(item)
            self._condition.notify_all()

    def schedule(self, running: list[S], now: float) -> SchedulerDecision[S]:
        """Drop expired and cancelled requests, then admit waiting ones into free slots."""
        decision: SchedulerDecision[S] = SchedulerDecision()
        for item in running:
            _sort_out(item, now, decision)
        with self._condition:
            kept: deque[S] = deque()
            for item in self._waiting:
                if not _sort_out(item, now, decision):
                    kept.append(item)
            self._waiting = kept
            slots = self.max_batch_size - (
                len(running) - len(decision.expired) - len(decision.cancelled)
            )
            tiles = 0
            while self._waiting and slots > 0:
                candidate = self._waiting[0]
                if decision.admit and tiles + candidate.num_tiles > self.max_admit_tiles:
                    break
                decision.admit.append(self._waiting.popleft())
                tiles += candidate.num_tiles
                slots -= 1
        return decision

    def wait_for_work(self, timeout: float | None) -> None:
        """Sleep until something is queued or :meth:`wake` is called."""
        with self._condition:
            if not self._waiting:
                self._condition.wait(timeout)

    def wake(self) -> None:
        """Wake a sleeping loop."""
        with self._condition:
            self._condition.notify_all()

    def drain(self) -> list[S]:
        """Take every waiting request out of the queue."""
        with self._condition:
            items = list(self._waiting)
            self._waiting.clear()
            return items

    @property
    def queue_depth(self) -> int:
        """Requests waiting."""
        return len(self._waiting)


def _sort_out(item: Schedulable, now: float, decision: SchedulerDecision[S]) -> bool:
    if item.cancelled:
        decision.cancelled.append(item)  # type: ignore[arg-type]
        return True
    if item.deadline is not None and now >= item.deadline:
        decision.expired.append(item)  # type: ignore[arg-type]
        return True
    return False


def monotonic() -> float:
    """The engine's clock."""
    return time.monotonic()
