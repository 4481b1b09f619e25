"""Memory allocations of a steady-state training step.

nnback is measured with tracemalloc, which traces Python objects and NumPy's
array data (NumPy reports its data buffers to tracemalloc in their own
domain). Three figures come out, after warm-up steps:

* live growth: blocks and bytes that are still allocated after N more steps,
  divided by N (a cache that keeps growing, or a leak);
* transient peak: the maximum memory allocated at once during one step, above
  what was allocated before the step, over N steps;
* transient spikes: tracemalloc's peak between consecutive call and return
  events (``sys.setprofile``), so that each spike belongs to a short stretch
  of code: one call of a C or Cython function, or the Python lines between
  two calls. A spike of at least 1 KiB is the sign of a new array. A spike can also add up
  several small objects (a Cython call allocates about 200 bytes per typed
  memoryview argument), so each spike is listed with the code that ran in
  its interval, for inspection.

A step creates no new array of 1 KiB or more when it has no live growth in
blocks of 1 KiB or more and no spike of 1 KiB or more. Arrays smaller than
1 KiB (for example a 10-element bias gradient) cannot be distinguished from
Python's own small objects this way.

PyTorch allocates outside tracemalloc's view, so its figures come from
``torch.profiler`` with ``profile_memory=True``: the operators that allocated
memory during the profiled steps, and how many bytes.
"""

import sys
import tracemalloc

LARGE_BLOCK_BYTES = 1024


def _live_growth(step, steps):
    before = tracemalloc.take_snapshot()
    for _ in range(steps):
        step()
    after = tracemalloc.take_snapshot()
    new_blocks = 0
    new_bytes = 0
    new_large_blocks = 0
    for difference in after.compare_to(before, "traceback"):
        if difference.count_diff > 0:
            new_blocks += difference.count_diff
            new_bytes += max(difference.size_diff, 0)
            if difference.size_diff / difference.count_diff >= LARGE_BLOCK_BYTES:
                new_large_blocks += difference.count_diff
    return {
        "new_blocks_per_step": new_blocks / steps,
        "new_bytes_per_step": new_bytes / steps,
        "new_blocks_of_1kib_or_more_per_step": new_large_blocks / steps,
    }


def _transient_peak(step, steps):
    peaks = []
    for _ in range(steps):
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        step()
        peaks.append(tracemalloc.get_traced_memory()[1] - before)
    return max(peaks)


def _describe_frame(frame):
    if frame is None:
        return "top level"
    code = frame.f_code
    return f"{code.co_name} ({code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno})"


def _describe_function(function):
    name = getattr(function, "__qualname__", None) or getattr(function, "__name__", None) or repr(function)
    module = getattr(function, "__module__", None)
    return f"{module}.{name}" if module else name


def _describe_interval(frame, event, argument):
    """Name the code that ran between the previous profile event and this one."""
    if event == "call":
        return f"in {_describe_frame(frame.f_back)} before calling {_describe_frame(frame)}"
    if event == "c_call":
        return f"in {_describe_frame(frame)} before calling {_describe_function(argument)}"
    if event == "return":
        return f"in {_describe_frame(frame)} before returning"
    return f"inside {_describe_function(argument)} called from {_describe_frame(frame)}"


def _transient_spikes(step, steps):
    """Return the spikes of at least LARGE_BLOCK_BYTES between call events in the last of ``steps`` steps.

    The steps before the last one are profiled but not recorded, because the
    first profiled calls allocate once for the profiling itself.
    """
    spikes = []
    state = {"level": 0, "record": False}

    def profile(frame, event, argument):
        peak = tracemalloc.get_traced_memory()[1]
        spike = peak - state["level"]
        if state["record"] and spike >= LARGE_BLOCK_BYTES:
            spikes.append({"bytes": int(spike), "where": _describe_interval(frame, event, argument)})
        tracemalloc.reset_peak()
        state["level"] = tracemalloc.get_traced_memory()[0]

    sys.setprofile(profile)
    try:
        for index in range(steps):
            state["record"] = index == steps - 1
            tracemalloc.reset_peak()
            state["level"] = tracemalloc.get_traced_memory()[0]
            step()
    finally:
        sys.setprofile(None)
    return spikes


def measure_nnback(step, *, warmup_steps=5, steps=20):
    """Return live growth, transient peak and spikes of ``step`` after ``warmup_steps`` calls."""
    for _ in range(warmup_steps):
        step()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        # A few traced steps first, so that objects created on first use
        # under tracing (interned strings, caches) are not counted.
        for _ in range(2):
            step()
        result = _live_growth(step, steps)
        result["transient_peak_bytes"] = int(_transient_peak(step, steps))
        spikes = _transient_spikes(step, 3)
    finally:
        if not was_tracing:
            tracemalloc.stop()
    result["spikes_of_1kib_or_more"] = spikes
    result["new_arrays_of_1kib_or_more"] = bool(
        result["new_blocks_of_1kib_or_more_per_step"] > 0 or spikes
    )
    return result


def measure_torch(torch, step, *, warmup_steps=5, steps=10):
    """Return the allocating operators and bytes per step of a PyTorch step, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup_steps):
        step()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        for _ in range(steps):
            step()
    allocating = [
        event for event in profiler.events()
        if event.name != "[memory]" and event.self_cpu_memory_usage > 0
    ]
    operator_counts = {}
    for event in allocating:
        operator_counts[event.name] = operator_counts.get(event.name, 0) + 1
    return {
        "allocating_operators_per_step": len(allocating) / steps,
        "allocating_operators_of_1kib_or_more_per_step": sum(
            1 for event in allocating if event.self_cpu_memory_usage >= LARGE_BLOCK_BYTES
        ) / steps,
        "bytes_per_step": sum(event.self_cpu_memory_usage for event in allocating) / steps,
        "operators": {name: count / steps for name, count in sorted(operator_counts.items())},
        "new_arrays_of_1kib_or_more": any(
            event.self_cpu_memory_usage >= LARGE_BLOCK_BYTES for event in allocating
        ),
    }
