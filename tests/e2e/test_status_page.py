"""The status page in a real browser: headless Chromium against the live server."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import ROOT, Browser, Gunicorn, Messenger, Simulator, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

OUTPUT = Path(os.environ.get("TEST_OUTPUT_DIR", ROOT / "test-output"))


@pytest.fixture
def browser(logs_dir: Path) -> Iterator[Browser]:
    chromium = Browser(logs_dir)
    yield chromium
    chromium.close()


def test_the_status_page_shows_live_values_as_they_change(
    sim: Simulator,
    messenger_factory: Callable[..., Messenger],
    gunicorn: Gunicorn,
    real_redis: Any,
    browser: Browser,
) -> None:
    messenger_factory(sim, "btcusdt", "ethbtc")
    wait_until(lambda: gunicorn.snapshot("BTCUSDT")[0] == gunicorn.snapshot("ETHBTC")[0] == 200, 5)
    browser.open(f"{gunicorn.url}/")
    bid = "document.getElementById('bid-BTCUSDT')?.textContent"
    wait_until(lambda: browser.text(bid), 10, 0.1, what="the page to show BTCUSDT")
    assert "connections" in browser.text("document.getElementById('summary').textContent")

    sim.market(rate=0)
    sent = sim.set_book("BTCUSDT", "12345.67800000", "1.00000000", "12345.77800000", "2.00000000")
    wait_until(lambda: browser.text(bid) == "12345.67800000", 5, 0.1, what="the new bid on the page")
    shot = browser.screenshot(OUTPUT / "status-page.png")
    assert shot.stat().st_size > 5000
    assert sent["receivers"] >= 1

    browser.open(f"{gunicorn.url}/", width=390, height=844, mobile=True)  # a phone
    wait_until(lambda: browser.text(bid) == "12345.67800000", 10, 0.1)
    page_width = browser.text("document.documentElement.scrollWidth")
    assert page_width <= 390, "no sideways scrolling on a phone"
    browser.screenshot(OUTPUT / "status-page-phone.png")
