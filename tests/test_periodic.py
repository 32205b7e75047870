"""The periodic job thread: the first run at once or after an interval, and a prompt stop."""

import threading

from consent_gateway.pipeline.periodic import Periodic


def _runs(at_once: bool, interval: float) -> tuple[int, bool]:
    ran = threading.Event()
    count = 0

    def job() -> None:
        nonlocal count
        count += 1
        ran.set()

    periodic = Periodic("test", job, interval, at_once=at_once)
    periodic.start()
    happened = ran.wait(2.0)
    periodic.stop()
    assert not periodic.is_alive()
    return count, happened


def test_the_first_run_is_at_once_by_default() -> None:
    # An hour's interval: only the first run, at once, can happen within the wait.
    count, happened = _runs(True, 3600.0)
    assert happened and count == 1


def test_a_delayed_job_does_not_run_before_its_first_interval_and_stops_promptly() -> None:
    count, happened = _runs(False, 3600.0)
    assert not happened and count == 0


def test_a_delayed_job_runs_after_one_interval() -> None:
    count, happened = _runs(False, 0.05)
    assert happened and count >= 1
