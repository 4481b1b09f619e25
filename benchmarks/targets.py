"""Speed and allocation targets, checked against the medians of a run.

Each speed target is a ratio of two medians and an upper limit: the target is
met when the ratio is at most the limit (below it, for "faster than"). A
target whose figures were not measured (a section left out, PyTorch or
scikit-learn missing) is reported as not evaluated. Each target also carries
the most CPUs that other processes kept busy during the comparisons it reads,
because timings taken while other processes ran are not trustworthy.
"""

STEP_FLOOR_LIMITS = {32: 1.10, 128: 1.05, 1024: 1.03}
STEP_TORCH_LIMITS = {32: 0.70, 128: 0.85, 1024: 1.00}
ACTIVATION_COPY_LIMIT = 3.0
ACTIVATION_TORCH_LIMIT = 1.0
SOFTMAX_TORCH_LIMITS = {10: 0.5, 1000: 1.0}
EPOCH_SKLEARN_LIMIT = 0.65
EPOCH_TORCH_LIMIT = 0.80


def _median(comparison, contender):
    if comparison is None:
        return None
    figure = comparison["contenders"].get(contender)
    return None if figure is None else figure["median"]


def _other_cpus(comparisons):
    values = [
        comparison["cpu_activity"]["other_processes_cpus"]
        for comparison in comparisons
        if comparison is not None and comparison["cpu_activity"]["other_processes_cpus"] is not None
    ]
    return max(values) if values else None


def _target(description, threads, limit, numerator, denominator, sources, *, strict=False):
    target = {
        "target": description,
        "threads": threads,
        "ratio": None,
        "limit": limit,
        "met": None,
        "other_processes_cpus": _other_cpus(sources),
    }
    if numerator is not None and denominator is not None:
        target["ratio"] = numerator / denominator
        target["met"] = target["ratio"] < limit if strict else target["ratio"] <= limit
    return target


def _find(comparisons, **fields):
    for comparison in comparisons:
        if all(comparison.get(key) == value for key, value in fields.items()):
            return comparison
    return None


def _step_targets(steps, threads_list):
    targets = []
    for batch_size, limit in STEP_FLOOR_LIMITS.items():
        comparison = _find(steps, batch_size=batch_size, threads=1)
        floor = comparison["derived"]["gemm floor net"]["median"] if comparison else None
        targets.append(_target(
            f"training step B={batch_size} <= {limit:.2f}x GEMM floor (net of call overhead)", 1, limit,
            _median(comparison, "nnback"), floor, [comparison],
        ))
    for threads in threads_list:
        for batch_size, limit in STEP_TORCH_LIMITS.items():
            comparison = _find(steps, batch_size=batch_size, threads=threads)
            targets.append(_target(
                f"training step B={batch_size} <= {limit:.2f}x PyTorch", threads, limit,
                _median(comparison, "nnback"), _median(comparison, "torch"), [comparison],
            ))
    if 1 in threads_list and 2 in threads_list:
        for batch_size in STEP_FLOOR_LIMITS:
            one_thread = _find(steps, batch_size=batch_size, threads=1)
            two_threads = _find(steps, batch_size=batch_size, threads=2)
            targets.append(_target(
                f"training step B={batch_size}: 2 threads <= 1 thread", "2 vs 1", 1.0,
                _median(two_threads, "nnback"), _median(one_thread, "nnback"), [one_thread, two_threads],
            ))
    return targets


def _op_targets(ops):
    targets = []
    for comparison in ops:
        threads = comparison["threads"]
        nnback = _median(comparison, "nnback")
        if comparison["kind"] == "activation":
            name = comparison["case"]
            targets.append(_target(
                f"{name} fwd+bwd <= {ACTIVATION_COPY_LIMIT:.0f}x NumPy copy", threads, ACTIVATION_COPY_LIMIT,
                nnback, _median(comparison, "numpy copy"), [comparison],
            ))
            targets.append(_target(
                f"{name} fwd+bwd faster than PyTorch (preallocated outputs)", threads, ACTIVATION_TORCH_LIMIT,
                nnback, _median(comparison, "torch"), [comparison], strict=True,
            ))
        elif comparison["kind"] == "softmax_cross_entropy":
            limit = SOFTMAX_TORCH_LIMITS.get(comparison["n_classes"])
            if limit is not None:
                targets.append(_target(
                    f"{comparison['case']} fwd+bwd <= {limit:.1f}x PyTorch", threads, limit,
                    nnback, _median(comparison, "torch"), [comparison],
                ))
    return targets


def _epoch_targets(epochs, threads_list):
    targets = []
    for threads in threads_list:
        comparison = _find(epochs, threads=threads)
        nnback = _median(comparison, "nnback")
        targets.append(_target(
            f"epoch <= {EPOCH_SKLEARN_LIMIT:.2f}x scikit-learn MLPClassifier", threads, EPOCH_SKLEARN_LIMIT,
            nnback, _median(comparison, "sklearn"), [comparison],
        ))
        targets.append(_target(
            f"epoch <= {EPOCH_TORCH_LIMIT:.2f}x PyTorch", threads, EPOCH_TORCH_LIMIT,
            nnback, _median(comparison, "torch"), [comparison],
        ))
    return targets


def _allocation_targets(allocations):
    targets = []
    for entry in allocations:
        if entry["contender"] != "nnback":
            continue
        targets.append({
            "target": f"training step B={entry['batch_size']} allocates no new arrays (1 KiB or more)",
            "threads": 1,
            "ratio": None,
            "limit": None,
            "met": not entry["new_arrays_of_1kib_or_more"],
            "other_processes_cpus": None,
        })
    return targets


def evaluate(results, threads_list):
    """Return every target with its measured ratio, its limit and whether it was met."""
    sections = results["sections"]
    targets = []
    if "train" in sections:
        targets += _step_targets(sections["train"], threads_list)
    if "ops" in sections:
        targets += _op_targets(sections["ops"])
    if "epoch" in sections:
        targets += _epoch_targets(sections["epoch"], threads_list)
    if "alloc" in sections:
        targets += _allocation_targets(sections["alloc"])
    return targets
