"""A batcher waits for more callers only while several are at work (``batch_wait``)."""

from __future__ import annotations

from mmlm_stream.pipeline.batch_wait import BatchWait


def test_a_lone_caller_waits_only_the_quiet_wait():
    wait = BatchWait(quiet_s=0.2, busy_s=1.0)
    assert [wait.for_call(t) for t in (0.0, 5.0, 9.0, 20.0)] == [0.2] * 4


def test_calls_coming_close_together_wait_for_each_other():
    wait = BatchWait(quiet_s=0.2, busy_s=1.0)
    assert [wait.for_call(t) for t in (0.0, 0.4, 1.1, 4.0, 4.5)] == [0.2, 1.0, 1.0, 0.2, 1.0]


def test_without_a_busy_wait_the_quiet_one_always_applies():
    wait = BatchWait(quiet_s=0.05)
    assert [wait.for_call(t) for t in (0.0, 0.01, 0.02)] == [0.05] * 3
