"""Threads: GIL release, bitwise agreement with serial runs, and the in-use guards.

* Every compiled entry point releases the GIL while it works: another Python
  thread runs during the call (checked at run time), and every data loop of a
  ``def`` in src/nnback/_*.pyx sits inside ``with nogil`` (checked in the source).
* Concurrent calls and training runs on separate data and separate models give
  the serial results bit for bit.
* An object that keeps state between calls (layer, loss, model, optimizer)
  rejects a second thread with RuntimeError while a first thread uses it.
"""

import copy
import importlib
import os
import pathlib
import pickle
import re
import sys
import threading
import time
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import nnback
from nnback import (
    SGD,
    Adam,
    ReLU,
    SoftmaxCrossEntropy,
    Tanh,
    _activations,
    _blas,
    _linear,
    _network,
    _optim,
    _softmax,
    functional,
    mlp,
)
from nnback.training import _compiled_chain

N_THREADS = 4
# Each thread repeats its call, so that the calls of different threads overlap.
REPEATS = 5

DTYPES = [np.float32, np.float64]


def linear_inputs(rng, dtype):
    return (
        rng.standard_normal((192, 96)).astype(dtype),
        rng.standard_normal((96, 48)).astype(dtype),
        rng.standard_normal(48).astype(dtype),
        rng.standard_normal((192, 48)).astype(dtype),
    )


def logits_inputs(rng, dtype):
    z = (4 * rng.standard_normal((300, 40))).astype(dtype)
    labels = rng.integers(0, 40, size=300)
    probabilities = rng.random((300, 40)).astype(dtype)
    return z, labels, probabilities


def elementwise_inputs(rng, dtype):
    x = (3 * rng.standard_normal(60_000)).astype(dtype)
    dy = rng.standard_normal(60_000).astype(dtype)
    return x, dy


def as_arrays(result):
    """Return a call's result as a list of arrays, with floats as 0-d arrays."""
    if not isinstance(result, tuple):
        result = (result,)
    return [np.asarray(value) for value in result if value is not None]


# (id, input maker, call on the inputs)
CASES = [
    ("linear_forward", linear_inputs, lambda x, w, b, dy: functional.linear_forward(x, w, b)),
    ("linear_backward", linear_inputs, lambda x, w, b, dy: functional.linear_backward(x, w, dy)),
    ("linear_backward_no_dx", linear_inputs,
     lambda x, w, b, dy: functional.linear_backward(x, w, dy, need_dx=False)),
    ("softmax", logits_inputs, lambda z, labels, t: functional.softmax(z)),
    ("log_softmax", logits_inputs, lambda z, labels, t: functional.log_softmax(z)),
    ("cross_entropy_indices_mean", logits_inputs,
     lambda z, labels, t: functional.softmax_cross_entropy(z, labels)),
    ("cross_entropy_indices_none", logits_inputs,
     lambda z, labels, t: functional.softmax_cross_entropy(z, labels, reduction="none")),
    ("cross_entropy_probabilities_sum", logits_inputs,
     lambda z, labels, t: functional.softmax_cross_entropy(z, t, reduction="sum")),
    ("cross_entropy_probabilities_none", logits_inputs,
     lambda z, labels, t: functional.softmax_cross_entropy(z, t, reduction="none")),
]

ACTIVATION_CASES = [
    (f"{name}_{direction}", name, direction)
    for name in ("sigmoid", "tanh", "relu")
    for direction in ("forward", "backward")
]


def run_concurrently(call, datasets):
    """Run ``call`` REPEATS times on each dataset, one thread per dataset, and return every result."""

    def repeat(data):
        return [as_arrays(call(*data)) for _ in range(REPEATS)]

    with ThreadPoolExecutor(max_workers=N_THREADS) as pool:
        return list(pool.map(repeat, datasets))


def assert_bitwise_equal(concurrent_results, serial_results):
    for thread_results, expected in zip(concurrent_results, serial_results):
        for result in thread_results:
            assert len(result) == len(expected)
            for actual, expected_array in zip(result, expected):
                assert actual.dtype == expected_array.dtype
                assert actual.shape == expected_array.shape
                assert actual.tobytes() == expected_array.tobytes()


def check_threads_match_serial(make_inputs, call, dtype, blas_threads):
    rng = np.random.default_rng(7)
    datasets = [make_inputs(rng, dtype) for _ in range(N_THREADS)]

    with threadpool_limits(limits=blas_threads, user_api="blas"):
        serial = [as_arrays(call(*data)) for data in datasets]
        concurrent = run_concurrently(call, datasets)

    assert_bitwise_equal(concurrent, serial)


@pytest.mark.parametrize("blas_threads", [1, 2], ids=["blas1", "blas2"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda dtype: np.dtype(dtype).name)
@pytest.mark.parametrize(
    "make_inputs, call", [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_threads_match_serial(make_inputs, call, dtype, blas_threads):
    check_threads_match_serial(make_inputs, call, dtype, blas_threads)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda dtype: np.dtype(dtype).name)
@pytest.mark.parametrize(
    "name, direction", [case[1:] for case in ACTIVATION_CASES], ids=[case[0] for case in ACTIVATION_CASES]
)
def test_activation_threads_match_serial(name, direction, dtype):
    pytest.importorskip("nnback._activations")
    forward = getattr(functional, f"{name}_forward")
    backward = getattr(functional, f"{name}_backward")

    if direction == "forward":
        call = lambda x, dy: forward(x)  # noqa: E731
    else:
        call = lambda x, dy: backward(forward(x), dy)  # noqa: E731

    check_threads_match_serial(elementwise_inputs, call, dtype, blas_threads=1)


# ---------------------------------------------------------------------------
# Every compiled entry point releases the GIL
# ---------------------------------------------------------------------------

# With this switch interval the interpreter never requests a running thread
# to hand over the GIL during a test. The counter thread below therefore runs
# only while the main thread has released the GIL itself, as a kernel's
# ``with nogil`` block does.
LONG_SWITCH_INTERVAL = 100.0
# On a busy machine a call may end before the operating system wakes the
# counter thread, so a check repeats the call up to this many times. A call
# that keeps the GIL gives no progress on any attempt.
MAX_ATTEMPTS = 200


class CounterThread:
    """A thread that increments ``count`` whenever it holds the GIL.

    While the context is active, the switch interval is LONG_SWITCH_INTERVAL.
    The counter releases the GIL after every increment (``time.sleep(0)``), so
    the main thread gets the GIL back as soon as it requests it.
    """

    def __init__(self):
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._saved_interval = None

    def _run(self):
        while not self._stop.is_set():
            self.count += 1
            time.sleep(0)

    def __enter__(self):
        # The interval is set before the thread starts: a thread already waiting
        # for the GIL would otherwise still force a switch after the old interval.
        self._saved_interval = sys.getswitchinterval()
        sys.setswitchinterval(LONG_SWITCH_INTERVAL)
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()
        sys.setswitchinterval(self._saved_interval)


def counter_progress(call):
    """Return how far the counter thread advanced during each run of ``call``.

    ``call`` runs up to MAX_ATTEMPTS times, and the list ends at the first run
    during which the counter advanced.
    """
    advances = []
    with CounterThread() as counter:
        for _ in range(MAX_ATTEMPTS):
            before = counter.count
            call()
            advances.append(counter.count - before)
            if advances[-1] > 0:
                break
    return advances


def random_array(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# Sizes that make each kernel call last milliseconds, long enough for the
# counter thread to be scheduled during it.
MATRIX_SHAPE = (384, 384)
N_ELEMENTS = 1 << 21
LOGITS_SHAPE = (1024, 1024)
CHAIN_SIZES = [256, 256, 256, 10]


def gemm_call(dtype):
    a = random_array(MATRIX_SHAPE, dtype)
    b = random_array(MATRIX_SHAPE, dtype, seed=1)
    c = np.empty(MATRIX_SHAPE, dtype)
    return lambda: _blas.gemm_for_tests(False, True, 1.0, a, b, 0.0, c)


def linear_forward_call(dtype):
    x = random_array(MATRIX_SHAPE, dtype)
    weight = random_array(MATRIX_SHAPE, dtype, seed=1)
    bias = random_array(MATRIX_SHAPE[1], dtype, seed=2)
    y = np.empty(MATRIX_SHAPE, dtype)
    return lambda: _linear.forward(x, weight, bias, y)


def linear_backward_call(dtype):
    x = random_array(MATRIX_SHAPE, dtype)
    weight = random_array(MATRIX_SHAPE, dtype, seed=1)
    dy = random_array(MATRIX_SHAPE, dtype, seed=2)
    dx, dweight = np.empty_like(x), np.empty_like(weight)
    dbias = np.empty(MATRIX_SHAPE[1], dtype)
    return lambda: _linear.backward(x, weight, dy, dx, dweight, dbias)


def elementwise_call(name):
    kernel = getattr(_activations, name)

    def make_call(dtype):
        x = random_array(N_ELEMENTS, dtype)
        out = np.empty_like(x)
        if name.endswith("_backward"):
            dy = random_array(N_ELEMENTS, dtype, seed=1)
            return lambda: kernel(x, dy, out)
        return lambda: kernel(x, out)

    return make_call


def row_call(name):
    kernel = getattr(_softmax, name)

    def make_call(dtype):
        z = random_array(LOGITS_SHAPE, dtype)
        out = np.empty_like(z)
        return lambda: kernel(z, out)

    return make_call


def cross_entropy_labels_call(dtype):
    z = random_array(LOGITS_SHAPE, dtype)
    labels = np.random.default_rng(1).integers(0, LOGITS_SHAPE[1], LOGITS_SHAPE[0]).astype(np.intp)
    dz = np.empty_like(z)
    row_loss = np.empty(LOGITS_SHAPE[0], dtype)
    return lambda: _softmax.cross_entropy_labels(z, labels, 1.0, dz, row_loss)


def cross_entropy_probabilities_call(dtype):
    z = random_array(LOGITS_SHAPE, dtype)
    targets = np.abs(random_array(LOGITS_SHAPE, dtype, seed=1))
    dz = np.empty_like(z)
    row_loss = np.empty(LOGITS_SHAPE[0], dtype)
    return lambda: _softmax.cross_entropy_probabilities(z, targets, 1.0, dz, row_loss)


def first_invalid_label_call(dtype):
    # The label check takes integers: the float dtype selects the label width.
    label_dtype = np.int32 if dtype == np.float32 else np.int64
    labels = np.zeros(4 * N_ELEMENTS, dtype=label_dtype)
    return lambda: _softmax.first_invalid_label(labels, 10)


def sgd_update_call(dtype):
    param, grad = random_array(N_ELEMENTS, dtype), random_array(N_ELEMENTS, dtype, seed=1)
    return lambda: _optim.sgd_update(param, grad, 1e-3, 1e-4)


def sgd_momentum_update_call(dtype):
    param, grad = random_array(N_ELEMENTS, dtype), random_array(N_ELEMENTS, dtype, seed=1)
    velocity = np.zeros_like(param)
    return lambda: _optim.sgd_momentum_update(param, grad, velocity, 1e-3, 0.9, 1e-4, True)


def adam_update_call(dtype):
    param, grad = random_array(N_ELEMENTS, dtype), random_array(N_ELEMENTS, dtype, seed=1)
    exp_avg, exp_avg_sq = np.zeros_like(param), np.zeros_like(param)
    return lambda: _optim.adam_update(
        param, grad, exp_avg, exp_avg_sq, 1e-3, 0.9, 0.999, 1e-8, 1e-4, 0.5
    )


def dense_chain_call(fused_sgd):
    def make_call(dtype):
        model = mlp(CHAIN_SIZES, dtype=dtype, rng=0)
        chain = _compiled_chain(model)
        x = random_array((256, CHAIN_SIZES[0]), dtype)
        labels = np.random.default_rng(1).integers(0, CHAIN_SIZES[-1], 256).astype(np.intp)
        learning_rate = 1e-3 if fused_sgd else 0.0
        return lambda: chain.train_step(x, labels, fused_sgd, learning_rate, 0.0, True)

    return make_call


# (entry point as module.name, variant, maker of a call for a float dtype)
GIL_CASES = [
    ("_blas.gemm_for_tests", "", gemm_call),
    ("_linear.forward", "", linear_forward_call),
    ("_linear.backward", "", linear_backward_call),
    *[
        (f"_activations.{name}", "", elementwise_call(name))
        for name in (
            "sigmoid_forward", "sigmoid_backward", "tanh_forward", "tanh_backward",
            "relu_forward", "relu_backward", "exp_for_tests",
        )
    ],
    ("_softmax.softmax", "", row_call("softmax")),
    ("_softmax.log_softmax", "", row_call("log_softmax")),
    ("_softmax.cross_entropy_labels", "", cross_entropy_labels_call),
    ("_softmax.cross_entropy_probabilities", "", cross_entropy_probabilities_call),
    ("_softmax.first_invalid_label", "", first_invalid_label_call),
    ("_optim.sgd_update", "", sgd_update_call),
    ("_optim.sgd_momentum_update", "", sgd_momentum_update_call),
    ("_optim.adam_update", "", adam_update_call),
    ("_network.DenseChain.train_step", "fused_sgd", dense_chain_call(fused_sgd=True)),
    ("_network.DenseChain.train_step", "gradients", dense_chain_call(fused_sgd=False)),
]

COMPILED_MODULES = [_activations, _blas, _linear, _network, _optim, _softmax]
# Types of the functions and methods that Cython compiles from ``def``.
DEF_TYPES = ("cython_function_or_method", "fused_cython_function", "method_descriptor")


def compiled_entry_points():
    """Return "module.function" and "module.Class.method" for every public def of the compiled modules."""
    names = set()
    for module in COMPILED_MODULES:
        module_name = module.__name__.rsplit(".", 1)[1]
        for name, value in vars(module).items():
            if name.startswith("_"):
                continue
            if type(value).__name__ in DEF_TYPES:
                names.add(f"{module_name}.{name}")
            elif isinstance(value, type) and value.__module__ == module.__name__:
                methods = [
                    attribute for attribute, member in vars(value).items()
                    if not attribute.startswith("_") and type(member).__name__ in DEF_TYPES
                ]
                names.update(f"{module_name}.{name}.{method}" for method in methods)
    return names


def test_gil_cases_cover_every_entry_point():
    covered = {entry_point for entry_point, _, _ in GIL_CASES}

    assert compiled_entry_points() == covered


def test_counter_still_during_gil_holding_call():
    # The check can fail: a pure-Python loop keeps the GIL for its whole run,
    # so the counter thread must not advance during any attempt.
    def hold_gil():
        total = 0
        for value in range(20_000):
            total += value
        return total

    assert counter_progress(hold_gil) == [0] * MAX_ATTEMPTS


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda dtype: np.dtype(dtype).name)
@pytest.mark.parametrize(
    "make_call", [case[2] for case in GIL_CASES],
    ids=[f"{case[0]}-{case[1]}" if case[1] else case[0] for case in GIL_CASES],
)
def test_kernel_releases_gil(make_call, dtype):
    call = make_call(dtype)

    advances = counter_progress(call)

    assert advances[-1] > 0, f"no other thread ran during {len(advances)} calls"


OPTIMIZER_MAKERS = {
    "sgd": lambda params: SGD(params, lr=1e-3),
    "sgd_nesterov": lambda params: SGD(params, lr=1e-3, momentum=0.9, nesterov=True),
    "adam": lambda params: Adam(params, lr=1e-3, weight_decay=1e-4),
}


@pytest.mark.parametrize("optimizer_name", list(OPTIMIZER_MAKERS))
def test_optimizer_step_releases_gil(optimizer_name):
    parameter = nnback.Parameter(random_array(N_ELEMENTS, np.float32))
    parameter.grad[...] = random_array(N_ELEMENTS, np.float32, seed=1)
    optimizer = OPTIMIZER_MAKERS[optimizer_name]([parameter])

    advances = counter_progress(optimizer.step)

    assert advances[-1] > 0, f"no other thread ran during {len(advances)} steps"


@pytest.mark.parametrize("optimizer_name", list(OPTIMIZER_MAKERS))
def test_train_step_releases_gil(optimizer_name):
    model = mlp(CHAIN_SIZES, dtype=np.float32, rng=0)
    optimizer = OPTIMIZER_MAKERS[optimizer_name](model.parameters())
    loss = SoftmaxCrossEntropy()
    x = random_array((256, CHAIN_SIZES[0]), np.float32)
    labels = np.random.default_rng(1).integers(0, CHAIN_SIZES[-1], 256).astype(np.intp)

    advances = counter_progress(lambda: nnback.train_step(model, loss, optimizer, x, labels))

    assert advances[-1] > 0, f"no other thread ran during {len(advances)} steps"


# ---------------------------------------------------------------------------
# Data loops of the compiled modules run inside ``with nogil`` (source check)
# ---------------------------------------------------------------------------

SOURCE_DIR = pathlib.Path(__file__).resolve().parents[1] / "src" / "nnback"

FUNCTION_START = re.compile(r"^(?P<indent> *)(?P<kind>cpdef|cdef|def)\s[^=]*?\b(?P<name>\w+)\s*\(")
CLASS_START = re.compile(r"^(?P<indent> *)(?:cdef\s+)?class\s+(?P<name>\w+)")
LOOP_START = re.compile(r"^\s*(?:for|while)\b.*:\s*(?:#.*)?$")
NOGIL_BLOCK = re.compile(r"^\s*with\s+nogil\s*:")
SELF_CALL = re.compile(r"\bself\.(\w+)\(")

# Loops that hold the GIL on purpose, because they walk Python objects (one
# entry per block of a network), not array elements.
LOOPS_WITH_GIL = {
    "_network.pyx:DenseChain.__cinit__",
    "_network.pyx:DenseChain.locked_step",
    "_network.pyx:DenseChain.empty_batch_step",
}
# Python-visible functions that touch no array data.
DEFS_WITHOUT_DATA = {"_network.pyx:DenseChain.__cinit__"}


def indentation(line):
    return len(line) - len(line.lstrip(" "))


def without_comment(line):
    return line.split("#", 1)[0].rstrip()


def parse_functions(path):
    """Return the functions of a .pyx file with what the nogil checks need.

    Each entry maps "file:Class.name" (or "file:name") to a dict with
    ``kind`` (def, cdef or cpdef), ``nogil`` (declared nogil), ``has_nogil_block``,
    ``loops_with_gil`` (loop lines outside ``with nogil``) and ``self_calls``.
    """
    lines = path.read_text().splitlines()
    functions = {}
    class_name, class_indent = None, -1
    index = 0
    while index < len(lines):
        line = lines[index]
        class_match = CLASS_START.match(line)
        if class_match:
            class_name, class_indent = class_match["name"], len(class_match["indent"])
            index += 1
            continue
        match = FUNCTION_START.match(line)
        if not match:
            index += 1
            continue

        indent = len(match["indent"])
        if indent <= class_indent:
            class_name, class_indent = None, -1
        # The signature ends at the line that closes its parentheses with ":".
        signature = without_comment(line)
        while signature.count("(") > signature.count(")") or not signature.endswith(":"):
            index += 1
            signature += " " + without_comment(lines[index]).strip()
        index += 1

        body_start = index
        while index < len(lines) and (not lines[index].strip() or indentation(lines[index]) > indent):
            index += 1
        body = lines[body_start:index]

        loops_with_gil = []
        nogil_indent = None
        has_nogil_block = False
        for body_line in body:
            if not body_line.strip():
                continue
            if nogil_indent is not None and indentation(body_line) <= nogil_indent:
                nogil_indent = None
            if NOGIL_BLOCK.match(body_line):
                nogil_indent = indentation(body_line)
                has_nogil_block = True
            elif nogil_indent is None and LOOP_START.match(body_line):
                loops_with_gil.append(body_line.strip())

        qualified = f"{class_name}.{match['name']}" if class_name else match["name"]
        functions[f"{path.name}:{qualified}"] = {
            "kind": match["kind"],
            "class": class_name,
            "nogil": bool(re.search(r"\bnogil\s*:$", signature)),
            "has_nogil_block": has_nogil_block,
            "loops_with_gil": loops_with_gil,
            "self_calls": set(SELF_CALL.findall("\n".join(body))),
        }
    return functions


def compiled_sources():
    paths = sorted(SOURCE_DIR.glob("_*.pyx"))
    if not paths:
        pytest.skip(f"no .pyx sources next to the tests in {SOURCE_DIR}")
    functions = {}
    for path in paths:
        functions.update(parse_functions(path))
    return functions


def test_source_parser_finds_kernels():
    # The checks below are only as good as the parser: it must see the
    # entry points, the nogil kernels and the loops that hold the GIL.
    functions = compiled_sources()

    assert functions["_linear.pyx:forward"]["kind"] == "def"
    assert functions["_linear.pyx:forward"]["has_nogil_block"]
    assert functions["_softmax.pyx:softmax_rows"]["nogil"]
    assert functions["_network.pyx:run_step"]["nogil"]
    assert functions["_network.pyx:DenseChain.train_step"]["self_calls"] == {"locked_step"}
    assert functions["_network.pyx:DenseChain.locked_step"]["loops_with_gil"]


def test_data_loops_run_without_gil():
    functions = compiled_sources()

    loops = {
        name: function["loops_with_gil"]
        for name, function in functions.items()
        if not function["nogil"] and function["loops_with_gil"] and name not in LOOPS_WITH_GIL
    }

    assert loops == {}


def test_every_def_enters_nogil():
    functions = compiled_sources()

    def enters_nogil(name, seen=()):
        function = functions[name]
        if function["has_nogil_block"]:
            return True
        prefix = name.split(":")[0] + ":" + (function["class"] + "." if function["class"] else "")
        return any(
            enters_nogil(prefix + callee, seen + (name,))
            for callee in function["self_calls"]
            if prefix + callee in functions and prefix + callee not in seen
        )

    missing = [
        name for name, function in functions.items()
        if function["kind"] == "def"
        and not name.endswith(".__dealloc__")
        and name not in DEFS_WITHOUT_DATA
        and not enters_nogil(name)
    ]

    assert missing == []


# ---------------------------------------------------------------------------
# Threads training separate models give the serial results bit for bit
# ---------------------------------------------------------------------------

TRAIN_SIZES = [48, 64, 64, 8]
TRAIN_BATCH = 32
TRAIN_STEPS = 12


def make_optimizer(name, parameters):
    if name == "sgd":
        # Momentum-free SGD takes train_step's fused update.
        return SGD(parameters, lr=0.05, weight_decay=1e-4)
    if name == "sgd_nesterov":
        return SGD(parameters, lr=0.05, momentum=0.9, nesterov=True)
    return Adam(parameters, lr=1e-3, weight_decay=1e-4)


def training_run(seed, optimizer_name, dtype, target_kind, n_steps=TRAIN_STEPS):
    """Train a new model with its own optimizer, loss and data, and return its losses and parameters.

    Class-index targets take the compiled dense-chain path of train_step, and
    one-hot probability targets take the layers' forward and backward.
    """
    rng = np.random.default_rng(seed)
    model = mlp(TRAIN_SIZES, activation="tanh", dtype=dtype, rng=seed)
    optimizer = make_optimizer(optimizer_name, model.parameters())
    loss = SoftmaxCrossEntropy()
    n_classes = TRAIN_SIZES[-1]

    losses = []
    for _ in range(n_steps):
        x = rng.standard_normal((TRAIN_BATCH, TRAIN_SIZES[0])).astype(dtype)
        labels = rng.integers(0, n_classes, TRAIN_BATCH)
        targets = labels if target_kind == "indices" else np.eye(n_classes, dtype=dtype)[labels]
        losses.append(nnback.train_step(model, loss, optimizer, x, targets))
    return losses, [parameter.data.copy() for parameter in model.parameters()]


def run_in_threads(function, argument_tuples):
    """Call ``function(*arguments)`` on one thread per tuple, all released together.

    Returns the results in the order of ``argument_tuples``.
    """
    barrier = threading.Barrier(len(argument_tuples))

    def start_together(arguments):
        barrier.wait()
        return function(*arguments)

    with ThreadPoolExecutor(max_workers=len(argument_tuples)) as pool:
        return list(pool.map(start_together, argument_tuples))


def assert_runs_identical(concurrent_runs, serial_runs):
    for (losses, parameters), (expected_losses, expected_parameters) in zip(
        concurrent_runs, serial_runs
    ):
        assert losses == expected_losses
        assert len(parameters) == len(expected_parameters)
        for actual, expected in zip(parameters, expected_parameters):
            assert actual.dtype == expected.dtype
            assert actual.tobytes() == expected.tobytes()


@pytest.mark.parametrize("target_kind", ["indices", "probabilities"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda dtype: np.dtype(dtype).name)
@pytest.mark.parametrize("optimizer_name", ["sgd", "sgd_nesterov", "adam"])
def test_train_step_threads_match_serial(optimizer_name, dtype, target_kind):
    arguments = [(seed, optimizer_name, dtype, target_kind) for seed in range(N_THREADS)]

    # One BLAS thread per call, so that the serial and the concurrent runs use
    # the same OpenBLAS code path.
    with threadpool_limits(limits=1, user_api="blas"):
        serial = [training_run(*args) for args in arguments]
        concurrent = run_in_threads(training_run, arguments)

    assert_runs_identical(concurrent, serial)


def test_train_step_threads_match_serial_blas2():
    # Four Python threads share OpenBLAS's pool of two threads here. A few
    # steps only, because this oversubscribes a small machine.
    arguments = [(seed, "adam", np.float32, "indices", 3) for seed in range(N_THREADS)]

    with threadpool_limits(limits=2, user_api="blas"):
        serial = [training_run(*args) for args in arguments]
        concurrent = run_in_threads(training_run, arguments)

    assert_runs_identical(concurrent, serial)


def classifier_fit(seed, solver, dtype):
    """Fit a new MLPClassifier on data of its own, and return its loss curve and parameters."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((160, 12))
    y = rng.integers(0, 3, 160)
    classifier = nnback.MLPClassifier(
        hidden_layer_sizes=(24,), solver=solver, batch_size=32, max_iter=4,
        random_state=seed, dtype=dtype,
    )
    classifier.fit(X, y)
    parameters = [array.copy() for array in classifier.coefs_ + classifier.intercepts_]
    return list(classifier.loss_curve_), parameters


@pytest.mark.filterwarnings("ignore:MLPClassifier stopped at max_iter")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda dtype: np.dtype(dtype).name)
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_classifier_fit_threads_match_serial(solver, dtype):
    pytest.importorskip("sklearn")
    arguments = [(seed, solver, dtype) for seed in range(N_THREADS)]

    with threadpool_limits(limits=1, user_api="blas"):
        serial = [classifier_fit(*args) for args in arguments]
        concurrent = run_in_threads(classifier_fit, arguments)

    assert_runs_identical(concurrent, serial)


# ---------------------------------------------------------------------------
# Predict may share one model between threads
# ---------------------------------------------------------------------------


def test_predict_threads_share_one_model():
    model = mlp([32, 64, 64, 5], activation="relu", dtype=np.float32, rng=0)
    inputs = [random_array((128, 32), np.float32, seed=seed) for seed in range(N_THREADS)]
    expected = [model.predict(x) for x in inputs]

    concurrent = run_in_threads(
        lambda x: [model.predict(x) for _ in range(REPEATS)], [(x,) for x in inputs]
    )

    for results, reference in zip(concurrent, expected):
        for result in results:
            assert result.tobytes() == reference.tobytes()


@pytest.mark.filterwarnings("ignore:MLPClassifier stopped at max_iter")
def test_classifier_predict_threads_share_one_model():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((200, 12)), rng.integers(0, 3, 200)
    classifier = nnback.MLPClassifier(hidden_layer_sizes=(24,), max_iter=3, random_state=0)
    classifier.fit(X, y)
    inputs = [random_array((64, 12), np.float64, seed=seed) for seed in range(N_THREADS)]
    expected = [classifier.predict_proba(x) for x in inputs]

    concurrent = run_in_threads(
        lambda x: [classifier.predict_proba(x) for _ in range(REPEATS)], [(x,) for x in inputs]
    )

    for results, reference in zip(concurrent, expected):
        for result in results:
            assert result.tobytes() == reference.tobytes()


# ---------------------------------------------------------------------------
# One object used by two threads at once raises RuntimeError
# ---------------------------------------------------------------------------

IN_USE = "is already in use by another thread"


class BlockingInput:
    """Array-like whose conversion to an ndarray waits until the test releases it.

    A method that receives it stops at its first ``np.asarray`` of the input,
    after it has entered its object's guard, so that the test can call into
    the same object from another thread at a known moment.
    """

    def __init__(self, array):
        self.array = array
        self.converting = threading.Event()
        self.release = threading.Event()

    def __array__(self, dtype=None, copy=None):
        self.converting.set()
        self.release.wait()
        return self.array if dtype is None else self.array.astype(dtype)


class HeldCall:
    """Run ``call`` on a new thread and keep it waiting inside ``blocker``'s conversion.

    On exit the call is released and joined, and then ``result`` and
    ``error`` contain its outcome.
    """

    def __init__(self, call, blocker):
        self.call = call
        self.blocker = blocker
        self.result = None
        self.error = None
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        try:
            self.result = self.call()
        except BaseException as error:  # noqa: BLE001 - checked by the test
            self.error = error
        finally:
            # Lets __enter__ return even if the call failed before the conversion.
            self.blocker.converting.set()

    def __enter__(self):
        self.thread.start()
        self.blocker.converting.wait()
        return self

    def __exit__(self, *exc_info):
        self.blocker.release.set()
        self.thread.join()


def run_on_new_thread(call):
    """Return ``call()`` computed on a new thread, re-raising its exception."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


def test_linear_forward_rejects_second_thread():
    layer = nnback.Linear(6, 4, rng=0)
    x = random_array((5, 6), np.float32)
    blocker = BlockingInput(x)

    with HeldCall(lambda: layer.forward(blocker).copy(), blocker) as held:
        with pytest.raises(RuntimeError, match=f"Linear {IN_USE}"):
            layer.forward(x)
        with pytest.raises(RuntimeError, match=f"Linear {IN_USE}"):
            layer.backward(np.ones((5, 4), np.float32))
        # predict stores nothing and reads weights that forward does not change.
        predicted = layer.predict(x)

    assert held.error is None
    assert held.result.tobytes() == predicted.tobytes()
    assert held.result.tobytes() == functional.linear_forward(
        x, layer.weight.data, layer.bias.data
    ).tobytes()


def test_linear_backward_rejects_second_thread():
    layer = nnback.Linear(6, 4, rng=0)
    x = random_array((5, 6), np.float32)
    dy = random_array((5, 4), np.float32, seed=1)
    layer.forward(x)
    blocker = BlockingInput(dy)

    with HeldCall(lambda: layer.backward(blocker).copy(), blocker) as held:
        with pytest.raises(RuntimeError, match=f"Linear {IN_USE}"):
            layer.forward(x)

    expected_dx, expected_dweight, _ = functional.linear_backward(x, layer.weight.data, dy)
    assert held.error is None
    assert held.result.tobytes() == expected_dx.tobytes()
    assert layer.weight.grad.tobytes() == expected_dweight.tobytes()


@pytest.mark.parametrize("activation_class", [ReLU, Tanh])
def test_activation_rejects_second_thread(activation_class):
    layer = activation_class()
    x = random_array((5, 6), np.float64)
    blocker = BlockingInput(x)
    name = activation_class.__name__

    with HeldCall(lambda: layer.forward(blocker).copy(), blocker) as held:
        with pytest.raises(RuntimeError, match=f"{name} {IN_USE}"):
            layer.forward(x)
        with pytest.raises(RuntimeError, match=f"{name} {IN_USE}"):
            layer.backward(x)

    assert held.error is None
    assert held.result.tobytes() == layer.predict(x).tobytes()


def test_loss_rejects_second_thread():
    loss = SoftmaxCrossEntropy()
    logits = random_array((5, 3), np.float64)
    labels = np.array([0, 1, 2, 1, 0])
    blocker = BlockingInput(logits)

    with HeldCall(lambda: loss.forward(blocker, labels), blocker) as held:
        with pytest.raises(RuntimeError, match=f"SoftmaxCrossEntropy {IN_USE}"):
            loss.forward(logits, labels)
        with pytest.raises(RuntimeError, match=f"SoftmaxCrossEntropy {IN_USE}"):
            loss.backward()

    expected, _ = functional.softmax_cross_entropy(logits, labels)
    assert held.error is None
    assert held.result == expected


def test_sequential_forward_rejects_second_thread():
    model = mlp([6, 8, 3], dtype=np.float64, rng=0)
    x = random_array((5, 6), np.float64)
    blocker = BlockingInput(x)

    with HeldCall(lambda: model.forward(blocker).copy(), blocker) as held:
        with pytest.raises(RuntimeError, match=f"Sequential {IN_USE}"):
            model.forward(x)
        with pytest.raises(RuntimeError, match=f"Sequential {IN_USE}"):
            model.backward(np.ones((5, 3)))
        with pytest.raises(RuntimeError, match="another thread is training this model"):
            model.predict(x)
        # The layer that the held call has entered rejects direct calls too.
        with pytest.raises(RuntimeError, match=f"Linear {IN_USE}"):
            model[0].forward(x)

    assert held.error is None
    assert held.result.tobytes() == model.predict(x).tobytes()


def test_sequential_backward_rejects_second_thread():
    model = mlp([6, 8, 3], dtype=np.float64, rng=0)
    x = random_array((5, 6), np.float64)
    model.forward(x)
    blocker = BlockingInput(np.ones((5, 3)))

    with HeldCall(lambda: model.backward(blocker), blocker) as held:
        with pytest.raises(RuntimeError, match=f"Sequential {IN_USE}"):
            model.forward(x)
        with pytest.raises(RuntimeError, match="another thread is training this model"):
            model.predict(x)

    assert held.error is None


def make_training_setup(seed):
    model = mlp([6, 8, 3], dtype=np.float64, rng=seed)
    return model, SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.1)


def test_train_step_rejects_shared_objects():
    model, loss, optimizer = make_training_setup(0)
    other_model, other_loss, other_optimizer = make_training_setup(1)
    x = random_array((5, 6), np.float64)
    labels = np.array([0, 1, 2, 1, 0])
    blocker = BlockingInput(x)

    with HeldCall(lambda: nnback.train_step(model, loss, optimizer, blocker, labels), blocker) as held:
        with pytest.raises(RuntimeError, match=f"Sequential {IN_USE}"):
            nnback.train_step(model, other_loss, SGD(model.parameters(), lr=0.1), x, labels)
        with pytest.raises(RuntimeError, match=f"SoftmaxCrossEntropy {IN_USE}"):
            nnback.train_step(other_model, loss, other_optimizer, x, labels)
        with pytest.raises(RuntimeError, match=f"SGD {IN_USE}"):
            optimizer.step()
        with pytest.raises(RuntimeError, match="another thread is training this model"):
            model.predict(x)
        # The rejected calls released the guards they had taken: the other
        # objects work from a third thread while the first call still runs.
        run_on_new_thread(lambda: nnback.train_step(other_model, other_loss, other_optimizer, x, labels))

    reference_model, reference_loss, reference_optimizer = make_training_setup(0)
    expected = nnback.train_step(reference_model, reference_loss, reference_optimizer, x, labels)
    assert held.error is None
    assert held.result == expected
    for actual, reference in zip(model.parameters(), reference_model.parameters()):
        assert actual.data.tobytes() == reference.data.tobytes()


def test_adam_step_rejects_second_thread():
    model = mlp([6, 8, 3], dtype=np.float32, rng=0)
    optimizer = Adam(model.parameters())
    x = random_array((5, 6), np.float32)
    labels = np.array([0, 1, 2, 1, 0])
    blocker = BlockingInput(x)

    step = lambda: nnback.train_step(model, SoftmaxCrossEntropy(), optimizer, blocker, labels)  # noqa: E731
    with HeldCall(step, blocker) as held:
        with pytest.raises(RuntimeError, match=f"Adam {IN_USE}"):
            optimizer.step()

    assert held.error is None
    assert optimizer.step_count == 1


def test_guard_released_after_error():
    layer = nnback.Linear(6, 4, rng=0)
    x = random_array((5, 6), np.float32)

    with pytest.raises(ValueError, match="expects x of shape"):
        layer.forward(np.ones((5, 7), np.float32))

    result = run_on_new_thread(lambda: layer.forward(x).copy())
    assert result.tobytes() == layer.predict(x).tobytes()


def test_owning_thread_may_reenter():
    # train_step holds the model's guard and then calls model.forward on the
    # layers' path (probability targets), in the same thread.
    model, loss, optimizer = make_training_setup(0)
    x = random_array((5, 6), np.float64)
    targets = np.eye(3)[[0, 1, 2, 1, 0]]

    value = nnback.train_step(model, loss, optimizer, x, targets)

    reference_model, _, _ = make_training_setup(0)
    expected, _ = functional.softmax_cross_entropy(reference_model.predict(x), targets)
    assert value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("duplicate", ["deepcopy", "pickle"])
def test_copied_model_has_own_guard(duplicate):
    model = mlp([6, 8, 3], dtype=np.float64, rng=0)
    x = random_array((5, 6), np.float64)
    blocker = BlockingInput(x)

    with HeldCall(lambda: model.forward(blocker), blocker) as held:
        if duplicate == "deepcopy":
            twin = copy.deepcopy(model)
        else:
            twin = pickle.loads(pickle.dumps(model))
        twin_output = twin.forward(x).copy()

    assert held.error is None
    assert twin_output.tobytes() == model.predict(x).tobytes()


def test_guard_module_documents_error():
    # The RuntimeError names the class and the fix.
    concurrency = importlib.import_module("nnback._concurrency")

    message = str(concurrency.in_use_error(SGD(mlp([2, 2]).parameters(), lr=0.1)))

    assert message.startswith("SGD is already in use by another thread.")
    assert "Give each thread its own" in message


# ---------------------------------------------------------------------------
# Misuse that the guards cannot reject must still leave a usable process
# ---------------------------------------------------------------------------


def pause_reads_of(monkeypatch, parameter, action):
    """Make the next read of ``parameter.data`` wait until ``action()`` has run on another thread.

    Returns a function that arms the pause. ``action`` runs while the reading
    thread waits inside the property getter, which holds no lock of nnback.
    """
    data_property = nnback.Parameter.data
    armed = threading.Event()

    def paused_getter(self):
        if self is parameter and armed.is_set():
            armed.clear()
            run_on_new_thread(action)
        return data_property.fget(self)

    monkeypatch.setattr(nnback.Parameter, "data", property(paused_getter, data_property.fset))
    return armed.set


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
@pytest.mark.parametrize("replaced", ["data", "grad"])
def test_compiled_step_keeps_replaced_arrays(monkeypatch, replaced, optimizer_name):
    # DenseChain.train_step reads the data and grad of each Parameter with the
    # GIL held, in order, and then computes with the GIL released. Here another
    # thread assigns a new array to the first weight after the step has read
    # it. The step must keep the old array alive, because it writes to it.
    model = mlp([6, 8, 3], dtype=np.float64, rng=0)
    loss = SoftmaxCrossEntropy()
    optimizer = make_optimizer(optimizer_name, model.parameters())
    x = random_array((5, 6), np.float64)
    labels = np.array([0, 1, 2, 1, 0])
    weight, first_bias = model[0].weight, model[0].bias
    old_array_alive = []

    def replace_weight_array():
        old_array = weakref.ref(getattr(weight, replaced))
        setattr(weight, replaced, np.zeros_like(weight.data))
        old_array_alive.append(old_array() is not None)

    reference_model = mlp([6, 8, 3], dtype=np.float64, rng=0)
    reference_optimizer = make_optimizer(optimizer_name, reference_model.parameters())
    nnback.train_step(reference_model, loss, reference_optimizer, x, labels)
    expected = nnback.train_step(reference_model, loss, reference_optimizer, x, labels)
    # The first step builds the cached chain, which reads .data outside the step.
    nnback.train_step(model, loss, optimizer, x, labels)
    arm = pause_reads_of(monkeypatch, first_bias, replace_weight_array)

    arm()
    value = nnback.train_step(model, loss, optimizer, x, labels)

    assert old_array_alive == [True]
    assert value == expected
    for parameter in model.parameters():
        assert np.isfinite(parameter.data).all()


def test_predict_overlapped_by_training_raises():
    # The check at the start of predict cannot see a train_step that starts
    # later. The call notices it at its end and discards its result.
    model, loss, optimizer = make_training_setup(0)
    x = random_array((5, 6), np.float64)
    labels = np.array([0, 1, 2, 1, 0])
    blocker = BlockingInput(x)

    with HeldCall(lambda: model.predict(blocker), blocker) as held:
        nnback.train_step(model, loss, optimizer, x, labels)

    assert isinstance(held.error, RuntimeError)
    assert "overlapped a forward, backward or train_step call" in str(held.error)
    assert held.result is None
    run_on_new_thread(lambda: model.predict(x))


def test_interrupted_train_step_releases_guards():
    # A KeyboardInterrupt while train_step takes its guards, after it has
    # taken the model's, must release the model for other threads.
    class InterruptingLoss:
        reduction = "mean"

        def forward(self, logits, targets):
            return 0.0

        def backward(self):
            return None

        @property
        def _use_guard(self):
            raise KeyboardInterrupt

    model, _, optimizer = make_training_setup(0)
    x = random_array((5, 6), np.float64)

    with pytest.raises(KeyboardInterrupt):
        nnback.train_step(model, InterruptingLoss(), optimizer, x, np.array([0, 1, 2, 1, 0]))

    result = run_on_new_thread(lambda: model.forward(x).copy())
    assert result.tobytes() == model.predict(x).tobytes()
    run_on_new_thread(optimizer.step)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_rejects_model_in_use():
    # In a child forked while another thread was inside train_step, the
    # model's guard stays held by a thread that does not exist there. Every
    # use raises RuntimeError naming the fork, instead of waiting.
    model, loss, optimizer = make_training_setup(0)
    x = random_array((5, 6), np.float64)
    labels = np.array([0, 1, 2, 1, 0])
    blocker = BlockingInput(x)
    calls = {
        "train_step": lambda: nnback.train_step(model, loss, optimizer, x, labels),
        "forward": lambda: model.forward(x),
        "predict": lambda: model.predict(x),
        "step": optimizer.step,
    }

    with HeldCall(lambda: nnback.train_step(model, loss, optimizer, blocker, labels), blocker) as held:
        read_end, write_end = os.pipe()
        with warnings.catch_warnings():
            # Python 3.12+ warns about forking a process with threads.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            os.close(read_end)
            lines = []
            for name, call in calls.items():
                try:
                    call()
                    lines.append(f"{name}: returned")
                except RuntimeError as error:
                    lines.append(f"{name}: {error}")
            os.write(write_end, "\n".join(lines).encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            report = pipe.read().decode().split("\n")
        _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert held.error is None
    assert len(report) == len(calls)
    for line, name in zip(report, calls):
        assert line.startswith(f"{name}: ")
        assert "in use by another thread when this process was forked" in line
