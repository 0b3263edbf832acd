"""Shared fixtures: every test starts and ends with an empty handler table."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from radiosonde import events


@pytest.fixture(autouse=True)
def _clean_event_core() -> Iterator[None]:
    events._reset_for_tests()
    yield
    events._reset_for_tests()
