"""helpers.py: calls inline or on helper threads, bounded backlog, first failure raised."""

from __future__ import annotations

import threading

import pytest

from shv_toolkit.core.helpers import HelperCalls


def test_inline_calls_return_values_and_raise_at_once():
    with HelperCalls(0, "t") as calls:
        assert calls.submit(lambda a, b: a + b, 2, 3) == 5
        assert HelperCalls.value(7) == 7
        with pytest.raises(ZeroDivisionError):
            calls.submit(lambda: 1 / 0)
    with pytest.raises(ValueError, match="threads"):
        HelperCalls(-1, "t")


def test_one_helper_thread_keeps_call_order():
    seen: list[tuple[int, str]] = []
    with HelperCalls(1, "shv-order", max_pending=4) as calls:
        for i in range(50):
            calls.submit(lambda i=i: seen.append((i, threading.current_thread().name)))
        calls.join()
    assert [i for i, _ in seen] == list(range(50))
    assert all(name.startswith("shv-order") for _, name in seen)


def test_backlog_is_bounded():
    """threads=1 holds at most 2 calls (one running, one waiting): a third submit waits for a slot."""
    gate = threading.Event()
    with HelperCalls(1, "shv-bound") as calls:
        a = calls.submit(gate.wait, 30)
        b = calls.submit(gate.wait, 30)
        got = {}
        third = threading.Thread(target=lambda: got.setdefault("c", calls.submit(lambda: "done")))
        third.start()
        third.join(timeout=0.5)
        blocked = third.is_alive()
        gate.set()
        third.join(timeout=30)
        calls.join()
    assert blocked and not third.is_alive()
    assert [HelperCalls.value(f) for f in (a, b, got["c"])] == [True, True, "done"]


def test_first_failure_is_raised_by_the_next_submit_and_by_join():
    def fail(msg):
        raise RuntimeError(msg)

    gate = threading.Event()

    def fail_later(msg):
        gate.wait(30)
        fail(msg)

    calls = HelperCalls(1, "shv-fail", max_pending=8)
    calls.submit(fail_later, "first")
    calls.submit(fail, "second")  # queued before the first one fails
    gate.set()
    with pytest.raises(RuntimeError, match="first"):
        calls.join()
    calls = HelperCalls(1, "shv-fail")
    with calls:
        calls.submit(fail, "early")
        with pytest.raises(RuntimeError, match="early"):
            for _ in range(100):  # the helper thread fails soon; a later submit raises it
                calls.submit(threading.Event().wait, 0.01)


def test_leaving_on_an_error_cancels_calls_not_started():
    gate, ran = threading.Event(), []
    threading.Timer(2.0, gate.set).start()  # the running call ends only after the block was left
    with pytest.raises(KeyError), HelperCalls(1, "shv-cancel", max_pending=5) as calls:
        running = calls.submit(gate.wait, 30)
        for i in range(3):
            calls.submit(ran.append, i)
        raise KeyError("stop")
    assert running.result() is True and ran == []
