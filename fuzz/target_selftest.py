"""Targets that check the runner: a crash, a hang and an ordinary failure.

Each one misbehaves on about one input in four, so a short run reaches it.
"""

import os
import time

from hypothesis import strategies as st

from fuzz.common import FuzzFailure, fuzz_target


@fuzz_target
def fuzz_crash(data):
    if data.draw(st.integers(0, 3)) == 0:
        os.abort()


@fuzz_target
def fuzz_hang(data):
    if data.draw(st.integers(0, 3)) == 0:
        time.sleep(3600)


@fuzz_target
def fuzz_failure(data):
    if data.draw(st.integers(0, 3)) == 0:
        raise FuzzFailure("selftest: planted failure", "raised on purpose")
