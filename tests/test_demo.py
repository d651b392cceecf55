"""The demo's CPU-time measurement of a stage (`egovlp.demo`)."""

from __future__ import annotations

import os
import sys
import time

import pytest

from egovlp.demo import _own_cpu_seconds


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_own_cpu_seconds_counts_this_process():
    before = _own_cpu_seconds(os.getpid())
    t0 = time.process_time()
    while time.process_time() - t0 < 0.3:  # burn 0.3 s of CPU
        pass
    after = _own_cpu_seconds(os.getpid())
    assert before is not None and after is not None
    assert 0.2 <= after - before <= 1.0


def test_own_cpu_seconds_of_a_missing_process_is_none():
    assert _own_cpu_seconds(2**22 + 12345) is None
