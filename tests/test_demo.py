"""The demo (the README's main job) runs end to end and reports what it measured."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from radiosonde import demo

ROOT = Path(__file__).resolve().parent.parent


def test_demo_serves_and_scrapes_its_own_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--requests", "24"]) == 0
    out = capsys.readouterr().out
    sent, failed = map(int, re.search(r"(\d+) messages sent, (\d+) failed", out).groups())  # type: ignore[union-attr]
    assert sent + failed == 24
    # the counters scraped over HTTP add up to the messages attempted
    totals = re.findall(r"send_message_stop_duration_total\{conversation=\"c\d\"\} (\S+)", out)
    assert sum(float(t) for t in totals) == sent
    # the 50 ms budget of the fetch path is reported, with its p95
    assert re.search(r"get_conversation_messages\s+p95\s+[\d.]+ ms\s+budget\s+50 ms", out)
    assert re.search(r"radiosonde_runtime_memory_rss_bytes \d", out)


def test_quickstart_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "shop.checkout.stop" in result.stdout
    assert "still attached" in result.stdout
