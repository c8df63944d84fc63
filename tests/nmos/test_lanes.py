"""Lanes (issue 23): independent steps at once, their events in the order of a sequential run.

Pure threading, no network: the workflow tests (test_workflow_lanes.py) run the same machinery
against a real server. These pin the two promises on which the workflow's output depends.
"""

from __future__ import annotations

import threading

import pytest

from estkit.nmos.lanes import OrderedEvents, run_lanes

WAIT_SECONDS = 10.0  # generous: only a broken implementation ever waits this long


def test_events_come_out_in_phase_order_whatever_order_the_threads_emit_them() -> None:
    seen: list[str] = []
    ordered = OrderedEvents(seen.append, ["a1", "b1", "a2", "b2"])
    b_done = threading.Event()

    def lane_b() -> None:
        with ordered.phase("b1"):
            ordered("b1: first")
        with ordered.phase("b2"):
            ordered("b2: first")
        b_done.set()

    thread = threading.Thread(target=lane_b)
    thread.start()
    assert b_done.wait(WAIT_SECONDS)  # lane b finished everything before lane a began
    thread.join(WAIT_SECONDS)
    assert seen == []  # held back: a1 comes first
    with ordered.phase("a1"):
        ordered("a1: first")
        assert seen == ["a1: first"]  # the head phase passes straight through, not held
        ordered("a1: second")
    assert seen == ["a1: first", "a1: second", "b1: first"]  # a1 done: b1 released, b2 held
    with ordered.phase("a2"):
        ordered("a2: only")
    assert seen == ["a1: first", "a1: second", "b1: first", "a2: only", "b2: first"]


def test_a_phase_skipped_by_a_failure_releases_the_phases_after_it() -> None:
    seen: list[str] = []
    ordered = OrderedEvents(seen.append, ["a1", "b1", "a2", "b2"])
    with ordered.phase("b1"):
        ordered("b1")
    with pytest.raises(RuntimeError), ordered.phase("a1"):
        ordered("a1: failing")
        raise RuntimeError("a1 failed")
    assert seen == ["a1: failing", "b1"]  # a phase that raised is finished all the same
    with ordered.phase("b2"):
        ordered("b2")
    assert seen == ["a1: failing", "b1"]  # a2 never ran, so b2 waits for it to be marked
    ordered.finish("a2")
    assert seen == ["a1: failing", "b1", "b2"]


def test_events_outside_any_phase_pass_through_and_flush_empties_the_rest() -> None:
    seen: list[str] = []
    ordered = OrderedEvents(seen.append, ["a", "b"])
    ordered("no phase")
    with ordered.phase("b"):
        ordered("b")
    assert seen == ["no phase"]
    ordered.flush()  # the run is over: whatever is held goes out, in phase order
    assert seen == ["no phase", "b"]


def test_lanes_run_at_the_same_time() -> None:
    """Each lane waits for the other at a barrier: lanes run one after the other would break it
    (BrokenBarrierError after the timeout), lanes run at once pass it."""
    barrier = threading.Barrier(2, timeout=WAIT_SECONDS)
    names: list[str] = []

    def lane() -> None:
        barrier.wait()
        names.append(threading.current_thread().name)

    assert run_lanes([lane, lane]) == [None, None]
    assert len(set(names)) == 2  # two threads


def test_a_failing_lane_does_not_stop_the_others_and_its_error_is_returned() -> None:
    finished: list[str] = []
    failure = ValueError("lane 0 failed")

    def failing() -> None:
        raise failure

    def working() -> None:
        finished.append("lane 1")

    errors = run_lanes([failing, working])
    assert errors[0] is failure and errors[1] is None
    assert finished == ["lane 1"]


def test_a_single_lane_runs_in_the_calling_thread() -> None:
    where: list[threading.Thread] = []
    assert run_lanes([lambda: where.append(threading.current_thread())]) == [None]
    assert where == [threading.current_thread()]


def test_lanes_not_at_once_run_in_turn_in_the_calling_thread() -> None:
    """For a node whose connector does not say it is safe for threads: one lane after the
    other, still each lane's error returned and the others run."""
    where: list[tuple[str, threading.Thread]] = []
    failure = ValueError("first failed")

    def first() -> None:
        where.append(("first", threading.current_thread()))
        raise failure

    def second() -> None:
        where.append(("second", threading.current_thread()))

    assert run_lanes([first, second], at_once=False) == [failure, None]
    assert where == [("first", threading.current_thread()), ("second", threading.current_thread())]


def test_an_interrupt_in_the_calling_thread_stops_the_lanes_in_turn() -> None:
    ran: list[str] = []

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_lanes([interrupted, lambda: ran.append("second")], at_once=False)
    assert ran == []
