"""messenger.worker: a background part whose thread dies of a defect stops the messenger (so what
started it starts it anew), instead of the process carrying on without it."""

from __future__ import annotations

import logging
import threading

import pytest

from messenger.worker import PartDied, Worker, check


class Part(Worker):
    def __init__(self, fail: bool) -> None:
        super().__init__("part-under-test")
        self.fail = fail
        self.ran = threading.Event()

    def run(self) -> None:
        self.ran.set()
        if self.fail:
            raise KeyError("no such key")  # the defect
        self._stopping.wait(5)


def test_a_part_that_raises_is_reported_and_stops_the_main_loop(caplog: pytest.LogCaptureFixture) -> None:
    part = Part(fail=True)
    with caplog.at_level(logging.CRITICAL, logger="messenger.worker"):
        part.start()
        part._thread.join(5)
    assert not part._thread.is_alive()
    assert isinstance(part.died, KeyError)
    assert "part-under-test: stopped by an unexpected error" in caplog.text
    with pytest.raises(PartDied, match="part-under-test died: KeyError"):
        check([Part(fail=False), part])


def test_parts_that_run_or_stopped_cleanly_do_not_stop_it() -> None:
    running, stopped = Part(fail=False), Part(fail=False)
    running.start()
    stopped.start()
    assert running.ran.wait(5) and stopped.ran.wait(5)
    stopped.stop()
    stopped._thread.join(5)
    check([running, stopped])  # nothing raised
    running.stop()
    running._thread.join(5)
