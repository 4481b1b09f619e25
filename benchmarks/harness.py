"""Interleaved timing of several contenders in one process.

A comparison has contenders, each a callable that does one unit of work: one
forward and backward pass, one training step or one epoch. The contenders are
timed round by round. In every round each contender takes one sample, so a
slow drift of the machine (clock frequency, other processes, page cache) hits
all of them alike. The order rotates by one position per round, so no
contender always runs right after the same neighbour.

A sample times ``inner`` back-to-back calls and divides by ``inner``. The
harness picks ``inner`` so that one sample lasts at least
``min_sample_seconds``, unless the contender fixes it. The garbage collector is
off while a sample runs, as in ``timeit``.
"""

import gc
import math
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass

from threadpoolctl import threadpool_limits


@dataclass
class Contender:
    """One competitor in a comparison.

    ``run`` does one unit of work per call. ``inner`` fixes the number of
    calls per sample, and None lets the harness calibrate it.
    """

    name: str
    run: object
    inner: int | None = None


def summarize(samples):
    """Return the median, quartiles, extremes and count of per-call times in seconds."""
    ordered = sorted(samples)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {
        "median": statistics.median(ordered),
        "q1": q1,
        "q3": q3,
        "min": ordered[0],
        "max": ordered[-1],
        "n": len(ordered),
    }


def compare(numerator, denominator):
    """Return the ratio of two contenders' medians and the quartiles of their per-round ratios.

    Both sample lists come from the same rounds, in round order, so sample i of
    one contender ran in the same round as sample i of the other.
    """
    paired = [a / b for a, b in zip(numerator, denominator)]
    summary = summarize(paired)
    return {
        "ratio": statistics.median(numerator) / statistics.median(denominator),
        "paired_q1": summary["q1"],
        "paired_q3": summary["q3"],
    }


def _time_calls(run, calls):
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(calls):
            run()
        elapsed = time.perf_counter() - start
    finally:
        if enabled:
            gc.enable()
    return elapsed


def calibrate(run, min_sample_seconds):
    """Return the number of calls of ``run`` that last at least ``min_sample_seconds``."""
    calls = 1
    while True:
        elapsed = _time_calls(run, calls)
        if elapsed >= min_sample_seconds:
            return calls
        if elapsed <= 0:
            calls *= 10
            continue
        # Aim 20 % above the minimum so that one more pass is rarely needed.
        calls = max(calls + 1, math.ceil(calls * 1.2 * min_sample_seconds / elapsed))


def time_interleaved(contenders, rounds, *, min_sample_seconds, warmup_calls=2, settle_seconds=0.0):
    """Time the contenders round by round.

    Every contender is called ``warmup_calls`` times first, so that buffers,
    caches and thread pools exist before the first sample. ``settle_seconds``
    is a pause before each sample that lets the previous contender's worker
    threads stop spinning.

    Returns ``(samples, inner)``: per-call seconds per contender name, in
    round order, and the number of calls per sample.
    """
    for contender in contenders:
        for _ in range(warmup_calls):
            contender.run()

    inner = {}
    for contender in contenders:
        inner[contender.name] = contender.inner or calibrate(contender.run, min_sample_seconds)

    samples = {contender.name: [] for contender in contenders}
    count = len(contenders)
    for round_index in range(rounds):
        shift = round_index % count
        for contender in contenders[shift:] + contenders[:shift]:
            if settle_seconds:
                time.sleep(settle_seconds)
            calls = inner[contender.name]
            samples[contender.name].append(_time_calls(contender.run, calls) / calls)
    return samples, inner


@contextmanager
def thread_limit(threads, torch_module=None):
    """Limit BLAS, OpenMP and PyTorch intra-op threads to ``threads`` inside the block.

    threadpoolctl changes only the thread pools of libraries that are already
    loaded, so every contender's modules must be imported before the block
    starts.
    """
    previous_torch_threads = None
    with threadpool_limits(limits=threads):
        if torch_module is not None:
            previous_torch_threads = torch_module.get_num_threads()
            torch_module.set_num_threads(threads)
        try:
            yield
        finally:
            if previous_torch_threads is not None:
                torch_module.set_num_threads(previous_torch_threads)
