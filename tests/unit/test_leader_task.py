"""Unit tests for cluster.election.LeaderTask: a coroutine that runs while this replica leads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from bulwark_server.cluster.election import Election, LeaderTask


class FakeElection:
    """Only what LeaderTask uses: listeners called with the new term, or None."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[int | None], None]] = []

    def on_change(self, listener: Callable[[int | None], None]) -> None:
        self.listeners.append(listener)

    def set_term(self, term: int | None) -> None:
        for listener in self.listeners:
            listener(term)


def _task(election: FakeElection, **kwargs: Any) -> tuple[LeaderTask, list[str]]:
    events: list[str] = []

    async def run() -> None:
        events.append("run")
        await asyncio.Event().wait()

    task = LeaderTask(cast(Election, election), run, "test-leader", **kwargs)
    return task, events


async def test_prepare_runs_synchronously_before_the_coroutine() -> None:
    election = FakeElection()
    events: list[str] = []
    task, ran = _task(election, prepare=lambda: events.append("prepare"))
    election.set_term(7)
    # Before any await: a request served right after the term starts sees prepared state.
    assert events == ["prepare"]
    assert ran == []
    await asyncio.sleep(0)
    assert ran == ["run"]
    await task.stop()


async def test_term_end_cancels_and_a_new_term_restarts() -> None:
    election = FakeElection()
    prepared: list[int] = []
    task, ran = _task(election, prepare=lambda: prepared.append(1))
    election.set_term(3)
    await asyncio.sleep(0)
    election.set_term(None)
    await asyncio.sleep(0)
    election.set_term(5)
    await asyncio.sleep(0)
    assert ran == ["run", "run"]
    assert len(prepared) == 2
    await task.stop()


async def test_disabled_task_neither_prepares_nor_runs() -> None:
    election = FakeElection()
    prepared: list[int] = []
    task, ran = _task(election, enabled=False, prepare=lambda: prepared.append(1))
    election.set_term(1)
    await asyncio.sleep(0)
    assert (ran, prepared) == ([], [])
    await task.stop()
