import pytest
from support import FakeClock

from serving.feedback import FeedbackJoin


def test_join_remembers_within_retention_and_forgets_after():
    clock = FakeClock(0.0)
    j = FeedbackJoin(10, retention_s=60, clock=clock)
    j.record("r1", "stable", ["noun.plant"])
    clock.now = 59
    assert j.lookup("r1").labels == ("noun.plant",)
    clock.now = 61
    assert j.lookup("r1") is None and len(j) == 0


def test_memory_is_bounded_oldest_first():
    j = FeedbackJoin(3, retention_s=60, clock=FakeClock(0.0))
    for i in range(5):
        j.record(f"r{i}", "stable", ["x"])
    assert len(j) == 3 and j.lookup("r0") is None and j.lookup("r4") is not None


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        FeedbackJoin(0, 10)
