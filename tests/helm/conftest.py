"""Fixtures of the chart tests: the chart, loaded once by Helm's Go SDK."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support.chart import load_chart


@pytest.fixture(scope="session")
def chart() -> Iterator[Any]:
    with load_chart() as loaded:
        yield loaded
