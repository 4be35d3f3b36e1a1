"""The messenger's startup heap is frozen out of full collections, once, when it is due."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from messenger.heap import Heap


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """This test process's heap as it was, whatever the test froze."""
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_the_heap_is_frozen_once_when_due() -> None:
    heap = Heap(started=100.0, after_s=10.0)
    heap.tick(109.9)
    assert (heap.frozen, gc.get_freeze_count()) == (False, 0)
    heap.tick(110.0)
    frozen = gc.get_freeze_count()
    assert heap.frozen and frozen > 0
    later = [[i] for i in range(1000)]  # made after the freeze: left to the collector
    heap.tick(200.0)
    assert gc.get_freeze_count() == frozen, len(later)  # never twice
