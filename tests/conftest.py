"""Shared pytest fixtures."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/postfixbench is a helper package (not shipped); make it importable as `postfixbench`.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from postfixbench import Bench, default_spec, missing_requirements


@pytest.fixture(scope="session")
def postfix_bench() -> Iterator[Bench]:
    """A running, isolated Postfix test bench (see tests/postfixbench). Skips when it cannot
    run here (not root, packages missing) unless CI=true, where it must run."""
    why = missing_requirements()
    if why and os.environ.get("CI") != "true":
        pytest.skip("Postfix test bench unavailable: " + "; ".join(why))
    bench = Bench.start(default_spec())
    yield bench
    bench.stop()
