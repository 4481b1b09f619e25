"""Speed and allocation targets, checked against the medians of a run.

Each target is a ratio of two medians and an upper limit: the target is met
when the ratio is at most the limit. A target whose figures were not
measured (a section left out, PyTorch or scikit-learn missing) is reported as
not evaluated.
"""

STEP_FLOOR_LIMITS = {32: 1.10, 128: 1.05, 1024: 1.03}
STEP_TORCH_LIMITS = {32: 0.70, 128: 0.85, 1024: 1.00}
ACTIVATION_COPY_LIMIT = 3.0
ACTIVATION_TORCH_LIMIT = 1.0
SOFTMAX_TORCH_LIMITS = {10: 0.5, 1000: 1.0}
EPOCH_SKLEARN_LIMIT = 0.65
EPOCH_TORCH_LIMIT = 0.80


def _median(comparison, contender):
    figure = comparison["contenders"].get(contender)
    return None if figure is None else figure["median"]


def _target(description, threads, numerator, denominator, limit, *, strict=False):
    if numerator is None or denominator is None:
        return {"target": description, "threads": threads, "ratio": None, "limit": limit, "met": None}
    ratio = numerator / denominator
    met = ratio < limit if strict else ratio <= limit
    return {"target": description, "threads": threads, "ratio": ratio, "limit": limit, "met": met}


def _find(comparisons, **fields):
    for comparison in comparisons:
        if all(comparison.get(key) == value for key, value in fields.items()):
            return comparison
    return None


def _step_targets(steps, threads_list):
    targets = []
    for batch_size, limit in STEP_FLOOR_LIMITS.items():
        comparison = _find(steps, batch_size=batch_size, threads=1)
        floor = comparison and comparison["derived"].get("gemm floor net")
        targets.append(_target(
            f"training step B={batch_size} <= {limit:.2f}x GEMM floor (net of call overhead)",
            1, comparison and _median(comparison, "nnback"), floor and floor["median"], limit,
        ))
    for threads in threads_list:
        for batch_size, limit in STEP_TORCH_LIMITS.items():
            comparison = _find(steps, batch_size=batch_size, threads=threads)
            targets.append(_target(
                f"training step B={batch_size} <= {limit:.2f}x PyTorch",
                threads, comparison and _median(comparison, "nnback"),
                comparison and _median(comparison, "torch"), limit,
            ))
    if 1 in threads_list and 2 in threads_list:
        for batch_size in STEP_FLOOR_LIMITS:
            one_thread = _find(steps, batch_size=batch_size, threads=1)
            two_threads = _find(steps, batch_size=batch_size, threads=2)
            targets.append(_target(
                f"training step B={batch_size}: 2 threads <= 1 thread",
                "2 vs 1", two_threads and _median(two_threads, "nnback"),
                one_thread and _median(one_thread, "nnback"), 1.0,
            ))
    return targets


def _op_targets(ops):
    targets = []
    for comparison in ops:
        threads = comparison["threads"]
        if comparison["kind"] == "activation":
            name = comparison["case"]
            nnback = _median(comparison, "nnback")
            targets.append(_target(
                f"{name} fwd+bwd <= {ACTIVATION_COPY_LIMIT:.0f}x NumPy copy",
                threads, nnback, _median(comparison, "numpy copy"), ACTIVATION_COPY_LIMIT,
            ))
            targets.append(_target(
                f"{name} fwd+bwd faster than PyTorch (preallocated outputs)",
                threads, nnback, _median(comparison, "torch"), ACTIVATION_TORCH_LIMIT, strict=True,
            ))
        elif comparison["kind"] == "softmax_cross_entropy":
            limit = SOFTMAX_TORCH_LIMITS.get(comparison["n_classes"])
            if limit is not None:
                targets.append(_target(
                    f"{comparison['case']} fwd+bwd <= {limit:.1f}x PyTorch",
                    threads, _median(comparison, "nnback"), _median(comparison, "torch"), limit,
                ))
    return targets


def _epoch_targets(epochs, threads_list):
    targets = []
    for threads in threads_list:
        comparison = _find(epochs, threads=threads)
        nnback = comparison and _median(comparison, "nnback")
        targets.append(_target(
            f"epoch <= {EPOCH_SKLEARN_LIMIT:.2f}x scikit-learn MLPClassifier",
            threads, nnback, comparison and _median(comparison, "sklearn"), EPOCH_SKLEARN_LIMIT,
        ))
        targets.append(_target(
            f"epoch <= {EPOCH_TORCH_LIMIT:.2f}x PyTorch",
            threads, nnback, comparison and _median(comparison, "torch"), EPOCH_TORCH_LIMIT,
        ))
    return targets


def _allocation_targets(allocations):
    targets = []
    for entry in allocations:
        if entry["contender"] != "nnback":
            continue
        allocates = entry["new_arrays_of_1kib_or_more"]
        targets.append({
            "target": f"training step B={entry['batch_size']} allocates no new arrays (1 KiB or more)",
            "threads": 1,
            "ratio": None,
            "limit": None,
            "met": not allocates,
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
