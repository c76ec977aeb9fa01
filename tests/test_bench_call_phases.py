"""benchmarks/bench_call_phases.py: its phase clock changes nothing of what the timed functions do."""

import contextlib
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
phases = pytest.importorskip("bench_call_phases")


def test_a_timed_context_manager_sees_the_exception_of_its_body():
    # a guard that restores on an exception must be told of it, as it is without the clock
    seen = []

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except ValueError as error:
            seen.append(error)
            raise

    owner = types.SimpleNamespace(guard=guard)
    clock = phases.Clock()
    clock.wrap_context(owner, "guard", "state guards")
    with pytest.raises(ValueError, match="inside"):
        with owner.guard():
            raise ValueError("inside")
    assert [str(e) for e in seen] == ["inside"]
    assert clock.seconds["state guards"] >= 0


def test_a_timed_context_manager_that_suppresses_an_exception_still_does():
    @contextlib.contextmanager
    def swallowing():
        with contextlib.suppress(KeyError):
            yield

    owner = types.SimpleNamespace(swallowing=swallowing)
    phases.Clock().wrap_context(owner, "swallowing", "state guards")
    with owner.swallowing():
        raise KeyError("gone")
