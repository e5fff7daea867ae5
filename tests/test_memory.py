"""Freed model memory goes back to the system: the trim rule and its effect on a heap."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from mmlm_stream.util.memory import IdleTrimmer


def test_nothing_is_trimmed_before_any_work():
    trimmer = IdleTrimmer(trim=pytest.fail, idle_s=1.0, busy_every_s=10.0)
    assert not trimmer.check(now=1e9)


def test_trims_once_when_work_stops_and_again_only_after_more_work():
    calls: list[int] = []
    trimmer = IdleTrimmer(trim=lambda: calls.append(1), idle_s=1.0, busy_every_s=10.0)
    with trimmer.busy():
        pass
    ended = trimmer._last_end
    assert not trimmer.check(now=ended + 0.5)
    assert trimmer.check(now=ended + 1.0)
    assert not trimmer.check(now=ended + 5.0)
    with trimmer.busy():
        pass
    assert trimmer.check(now=trimmer._last_end + 2.0)
    assert len(calls) == 2


def test_busy_without_pause_trims_every_interval():
    calls: list[int] = []
    trimmer = IdleTrimmer(trim=lambda: calls.append(1), idle_s=1.0, busy_every_s=10.0)
    with trimmer.busy():
        start = trimmer._last_trim
        assert not trimmer.check(now=start + 9.0)
        assert trimmer.check(now=start + 10.0)
        assert not trimmer.check(now=start + 15.0)
        assert trimmer.check(now=start + 20.0)
    assert len(calls) == 2


def test_a_failing_trim_is_logged_not_raised(caplog):
    def broken() -> None:
        raise OSError("no libc")

    trimmer = IdleTrimmer(trim=broken, idle_s=0.0)
    with trimmer.busy():
        pass
    assert trimmer.check()
    assert "releasing free memory failed" in caplog.text


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_memory_freed_by_a_worker_thread_returns_to_the_system():
    """What a model thread frees stays in its heap (RSS) until trimmed."""
    script = textwrap.dedent(
        """
        import threading
        from mmlm_stream.util.memory import release_free_memory

        def rss():
            status = open("/proc/self/status").read()
            return int(status.split("VmRSS:")[1].split()[0]) // 1024

        survivors = []

        def work():
            blocks = [bytearray(60_000) for _ in range(4000)]
            survivors.extend(blocks[::50])  # a few survivors pin the heap
            del blocks

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        before = rss()
        assert release_free_memory()
        print(before, rss())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    before, after = map(int, out.split())
    assert before - after >= 150, (before, after)
