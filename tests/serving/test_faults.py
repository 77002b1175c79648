"""Fault drills mean the same wherever a variant runs."""

from __future__ import annotations

import asyncio
import random
import time

import numpy as np
import pytest

from serving.faults import Faults, InjectedFault


def test_no_faults_leave_answers_alone():
    probs = np.eye(3, dtype=np.float32)
    f = Faults()
    assert not f.active and f.after_call(probs) is probs
    asyncio.run(f.before_call("v"))


def test_delay_error_and_flip():
    f = Faults({"delay_ms": 30.0}, random.Random(0))
    start = time.perf_counter()
    asyncio.run(f.before_call("v"))
    assert time.perf_counter() - start >= 0.03
    with pytest.raises(InjectedFault, match="injected failure of variant v"):
        asyncio.run(Faults({"error_rate": 1.0}).before_call("v"))
    probs = np.eye(3, dtype=np.float32)
    flipped = Faults({"flip_rate": 1.0}).after_call(probs)
    assert flipped.argmax(axis=1).tolist() == [1, 2, 0] and probs.argmax(axis=1).tolist() == [0, 1, 2]
