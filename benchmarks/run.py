"""Benchmark nnback against its NumPy reference, PyTorch, scikit-learn and the GEMM floor.

Usage::

    python benchmarks/run.py [--quick] [--threads 1,2] [--rounds N] [--only train,epoch]
                             [--json benchmarks/results.json]

Every comparison runs in this one process, with its contenders interleaved
round by round (see benchmarks/harness.py). The script prints the machine and
one Markdown table per section to standard output, progress to standard
error, and writes every sample to the JSON file. Sections:

* ops: linear, activation and softmax cross-entropy forward + backward;
* train: one training step of an MLP, with the GEMM floor;
* epoch: one epoch over MNIST-shaped random data;
* alloc: allocations per steady-state training step.

PyTorch and scikit-learn are optional: without them their columns show "-".
"""

import argparse
import functools
import importlib
import json
import os
import sys
import time
from types import SimpleNamespace

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The benchmarks package sits at the repository root. nnback itself is the
# installed one, whichever copy "import nnback" finds, and the machine section
# prints its path and commit.
if REPOSITORY_ROOT not in sys.path:
    sys.path.insert(0, REPOSITORY_ROOT)

import numpy as np  # noqa: E402

from benchmarks import allocations, ops, report, targets, training  # noqa: E402
from benchmarks.harness import compare, summarize, thread_limit, time_interleaved  # noqa: E402
from benchmarks.machine import CpuActivity, describe_machine, load_average  # noqa: E402

SECTIONS = ("ops", "train", "epoch", "alloc")
SEED = 0

FULL_SIZES = {
    "linear_batch": 128,
    "linear_shapes": [(784, 256), (256, 10)],
    "activation_elements": 16 * 2**20,
    "softmax_shapes": [(1024, 10), (1024, 1000)],
    "step_batch_sizes": [32, 128, 1024],
    "layer_sizes": [784, 256, 256, 10],
    "epoch_samples": 60000,
    "epoch_batch": 128,
    "rounds": 15,
    "epoch_rounds": 5,
    "min_sample_seconds": 0.05,
}

QUICK_SIZES = {
    "linear_batch": 16,
    "linear_shapes": [(784, 256), (256, 10)],
    "activation_elements": 2**16,
    "softmax_shapes": [(64, 10), (64, 100)],
    "step_batch_sizes": [8, 32],
    "layer_sizes": [784, 256, 256, 10],
    "epoch_samples": 512,
    "epoch_batch": 128,
    "rounds": 3,
    "epoch_rounds": 2,
    "min_sample_seconds": 0.002,
}


def parse_arguments(argv):
    parser = argparse.ArgumentParser(
        description="Time nnback against its reference, PyTorch, scikit-learn and the GEMM floor.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and 3 rounds, for a smoke test (the timings mean little)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per comparison in the ops and train sections "
                             "(default 15, or 3 with --quick)")
    parser.add_argument("--epoch-rounds", type=int, default=None,
                        help="rounds in the epoch section, one epoch per contender and round "
                             "(default 5, or 2 with --quick)")
    parser.add_argument("--threads", default="1,2",
                        help="comma-separated thread counts for BLAS, OpenMP and PyTorch (default 1,2)")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated sections to run, from {', '.join(SECTIONS)} (default all)")
    parser.add_argument("--min-sample-time", type=float, default=None,
                        help="minimum duration of one timing sample in seconds "
                             "(default 0.05, or 0.002 with --quick)")
    parser.add_argument("--settle", type=float, default=0.15,
                        help="pause in seconds before each sample at 2 or more threads, so that the "
                             "previous contender's idle worker threads stop spinning (default 0.15)")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if it is installed")
    parser.add_argument("--no-sklearn", action="store_true",
                        help="leave scikit-learn out even if it is installed")
    parser.add_argument("--json", default=os.path.join(REPOSITORY_ROOT, "benchmarks", "results.json"),
                        help="path of the JSON results file (default benchmarks/results.json)")
    arguments = parser.parse_args(argv)

    try:
        arguments.threads = [int(value) for value in arguments.threads.split(",") if value.strip()]
    except ValueError:
        parser.error(f"--threads must be comma-separated integers, got {arguments.threads!r}")
    if not arguments.threads or min(arguments.threads) < 1:
        parser.error(f"--threads must list thread counts of at least 1, got {arguments.threads!r}")

    if arguments.only is None:
        arguments.only = list(SECTIONS)
    else:
        arguments.only = [value.strip() for value in arguments.only.split(",") if value.strip()]
        unknown = [value for value in arguments.only if value not in SECTIONS]
        if unknown or not arguments.only:
            parser.error(f"--only takes sections from {', '.join(SECTIONS)}, got {unknown or arguments.only}")

    for name in ("rounds", "epoch_rounds"):
        value = getattr(arguments, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if arguments.min_sample_time is not None and arguments.min_sample_time <= 0:
        parser.error(f"--min-sample-time must be positive, got {arguments.min_sample_time}")
    if arguments.settle < 0:
        parser.error(f"--settle must be 0 or more, got {arguments.settle}")
    return arguments


def _first_attribute(name, module_names):
    for module_name in module_names:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # Skip a module that does not exist, but not one whose own imports fail.
            if error.name != module_name:
                raise
            continue
        if hasattr(module, name):
            return getattr(module, name)
    return None


def load_libraries(use_torch, use_sklearn):
    """Import nnback and the optional peers, so that every BLAS and OpenMP library is loaded."""
    import nnback
    from nnback import functional, reference

    modules = SimpleNamespace(nnback=nnback, functional=functional, reference=reference)
    for name, homes in {
        "mlp": ["nnback", "nnback.layers"],
        "SoftmaxCrossEntropy": ["nnback", "nnback.layers"],
        "SGD": ["nnback", "nnback.optim"],
        "train_step": ["nnback", "nnback.layers"],
    }.items():
        value = _first_attribute(name, homes)
        if value is None:
            raise ImportError(f"nnback has no {name} in any of {homes}")
        setattr(modules, name, value)

    modules.torch = None
    if use_torch:
        try:
            import torch
        except ImportError:
            pass
        else:
            modules.torch = torch

    modules.sklearn_mlp = None
    if use_sklearn:
        try:
            from sklearn.neural_network import MLPClassifier
        except ImportError:
            pass
        else:
            modules.sklearn_mlp = MLPClassifier

    # SciPy's BLAS wrapper, so that threadpoolctl finds its OpenBLAS from the start.
    import scipy.linalg.blas  # noqa: F401
    return modules


def progress(message):
    print(message, file=sys.stderr, flush=True)


def run_comparison(contenders, settings, threads, torch, *, rounds=None, warmup_calls=2, **fields):
    """Time one set of contenders at ``threads`` threads and return the comparison record."""
    with thread_limit(threads, torch), CpuActivity() as activity:
        samples, inner = time_interleaved(
            contenders,
            rounds or settings["rounds"],
            min_sample_seconds=settings["min_sample_seconds"],
            warmup_calls=warmup_calls,
            settle_seconds=settings["settle"] if threads > 1 else 0.0,
        )
    figures = {}
    for name, values in samples.items():
        figures[name] = summarize(values)
        figures[name]["inner"] = inner[name]
    ratios = {}
    if "nnback" in samples:
        for name, values in samples.items():
            if name not in ("nnback", "sgemm call overhead"):
                ratios[f"nnback/{name}"] = compare(samples["nnback"], values)
    return {
        **fields,
        "threads": threads,
        "cpu_activity": activity.result,
        "contenders": figures,
        "ratios": ratios,
        "samples": samples,
        "derived": {},
    }


def run_ops(modules, settings, threads_list):
    comparisons = []
    batch_size = settings["linear_batch"]
    for threads in threads_list:
        for n_features, n_outputs in settings["linear_shapes"]:
            case = f"linear {batch_size}x{n_features} -> {n_outputs}"
            progress(f"ops: {case}, {threads} thread(s)")
            rng = np.random.default_rng(SEED)
            contenders = ops.linear_contenders(modules, batch_size, n_features, n_outputs, rng)
            comparisons.append(run_comparison(
                contenders, settings, threads, modules.torch, kind="linear", case=case,
                batch_size=batch_size, n_features=n_features, n_outputs=n_outputs,
            ))

        n_elements = settings["activation_elements"]
        for name in ops.ACTIVATIONS:
            case = f"{name} {n_elements / 2**20:g}M"
            progress(f"ops: {case}, {threads} thread(s)")
            contenders = ops.activation_contenders(modules, name, n_elements, np.random.default_rng(SEED))
            comparisons.append(run_comparison(
                contenders, settings, threads, modules.torch, kind="activation", case=case,
                activation=name, n_elements=n_elements,
            ))
            # Free the large arrays before the next activation allocates its own.
            del contenders

        for batch_size_loss, n_classes in settings["softmax_shapes"]:
            case = f"softmax cross-entropy {batch_size_loss}x{n_classes}"
            progress(f"ops: {case}, {threads} thread(s)")
            rng = np.random.default_rng(SEED)
            contenders = ops.softmax_cross_entropy_contenders(modules, batch_size_loss, n_classes, rng)
            comparisons.append(run_comparison(
                contenders, settings, threads, modules.torch, kind="softmax_cross_entropy", case=case,
                batch_size=batch_size_loss, n_classes=n_classes,
            ))
    return comparisons


def run_train(modules, settings, threads_list):
    comparisons = []
    floor_checks = {}
    for threads in threads_list:
        for batch_size in settings["step_batch_sizes"]:
            progress(f"train: B={batch_size}, {threads} thread(s)")
            contenders, verification = training.step_contenders(
                modules, batch_size, settings["layer_sizes"], SEED
            )
            floor_checks[str(batch_size)] = verification
            if not verification["ok"]:
                raise RuntimeError(
                    f"the GEMM floor at B={batch_size} failed its check (output reuse, values, no copies): "
                    f"{json.dumps(verification['products'])}"
                )
            comparison = run_comparison(
                contenders, settings, threads, modules.torch, kind="train_step",
                case=f"B={batch_size}", batch_size=batch_size, layer_sizes=settings["layer_sizes"],
            )
            floor = comparison["samples"]["gemm floor"]
            overhead = comparison["samples"]["sgemm call overhead"]
            net = [raw - cost for raw, cost in zip(floor, overhead)]
            comparison["derived"]["gemm floor net"] = summarize(net)
            comparison["derived"]["nnback/gemm floor net"] = compare(comparison["samples"]["nnback"], net)
            comparisons.append(comparison)
    return comparisons, floor_checks


def run_epoch(modules, settings, threads_list):
    comparisons = []
    layer_sizes = settings["layer_sizes"]
    n_samples = settings["epoch_samples"]
    x, labels = training.training_data(n_samples, layer_sizes[0], layer_sizes[-1], SEED)
    case = f"{n_samples}x{layer_sizes[0]}, batch {settings['epoch_batch']}"
    for threads in threads_list:
        progress(f"epoch: {case}, {threads} thread(s)")
        with thread_limit(threads, modules.torch):
            contenders = training.epoch_contenders(
                modules, x, labels, settings["epoch_batch"], layer_sizes, SEED
            )
        comparisons.append(run_comparison(
            contenders, settings, threads, modules.torch, rounds=settings["epoch_rounds"], warmup_calls=0,
            kind="epoch", case=case, n_samples=n_samples, batch_size=settings["epoch_batch"],
        ))
    return comparisons


def run_alloc(modules, settings):
    entries = []
    layer_sizes = settings["layer_sizes"]
    with thread_limit(1, modules.torch):
        for batch_size in settings["step_batch_sizes"]:
            progress(f"alloc: B={batch_size}")
            x, labels = training.training_data(batch_size, layer_sizes[0], layer_sizes[-1], SEED)
            model, loss, optimizer = training.nnback_model(modules, layer_sizes, SEED)
            step = training.nnback_step_function(modules, model, loss, optimizer)
            result = allocations.measure_nnback(functools.partial(step, x, labels))
            entries.append({"contender": "nnback", "batch_size": batch_size, **result})

            torch = modules.torch
            if torch is not None:
                torch_step = training.torch_step_function(torch, layer_sizes, SEED)
                x_tensor, labels_tensor = torch.from_numpy(x), torch.from_numpy(labels)
                result = allocations.measure_torch(
                    torch, functools.partial(torch_step, x_tensor, labels_tensor)
                )
                entries.append({"contender": "torch", "batch_size": batch_size, **result})
    return entries


def main(argv=None):
    arguments = parse_arguments(argv)
    started = time.perf_counter()
    settings = dict(QUICK_SIZES if arguments.quick else FULL_SIZES)
    if arguments.rounds is not None:
        settings["rounds"] = arguments.rounds
    if arguments.epoch_rounds is not None:
        settings["epoch_rounds"] = arguments.epoch_rounds
    if arguments.min_sample_time is not None:
        settings["min_sample_seconds"] = arguments.min_sample_time
    settings["settle"] = arguments.settle

    modules = load_libraries(not arguments.no_torch, not arguments.no_sklearn)
    results = {
        "command": " ".join(["python", "benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": describe_machine(modules.nnback),
        "settings": {**settings, "threads": arguments.threads, "sections": arguments.only, "seed": SEED},
        "load_average": {"start": load_average(), "end": None},
        "sections": {},
    }
    print(report.render_machine(results), flush=True)

    sections = results["sections"]
    section_seconds = results["section_seconds"] = {}
    for section in SECTIONS:
        if section not in arguments.only:
            continue
        section_started = time.perf_counter()
        if section == "ops":
            sections["ops"] = run_ops(modules, settings, arguments.threads)
        elif section == "train":
            sections["train"], results["gemm_floor_checks"] = run_train(modules, settings, arguments.threads)
        elif section == "epoch":
            sections["epoch"] = run_epoch(modules, settings, arguments.threads)
        else:
            sections["alloc"] = run_alloc(modules, settings)
        section_seconds[section] = time.perf_counter() - section_started
        progress(f"{section}: done in {section_seconds[section]:.0f} s")

    results["targets"] = targets.evaluate(results, arguments.threads)
    results["load_average"]["end"] = load_average()
    results["elapsed_seconds"] = time.perf_counter() - started

    print(report.render_sections(results))
    print(f"Total time: {results['elapsed_seconds']:.0f} s", flush=True)

    directory = os.path.dirname(os.path.abspath(arguments.json))
    os.makedirs(directory, exist_ok=True)
    with open(arguments.json, "w", encoding="utf-8") as output:
        json.dump(results, output, indent=1)
    progress(f"wrote {arguments.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
