"""Memory of the compiled entry points stays flat over many thousands of calls.

Each case calls one entry point in a loop inside a child interpreter (this file
run as a script), so that the pytest process's own allocations do not mix in.
After a warm-up block the child records the reference counts of the arrays
that the case uses. It then runs further blocks of calls, and after each it
records its resident set size (RSS, from /proc/self/statm) and the number of
memory blocks that Python's allocator holds (``sys.getallocatedblocks``).

A leak in a kernel shows in one of three ways. Memory from malloc that is
never freed raises the RSS. A Python object that is never released raises the
allocated block count. An extra reference to an input or output array (for
example a buffer export that is never released) raises its reference count. Run ``python tests/test_memory.py CASE ...`` to print the raw
measurements of some cases.
"""

import gc
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import nnback
from nnback import _activations, _network, functional
from nnback.layers import Linear, Parameter, ReLU, Sequential, Sigmoid, SoftmaxCrossEntropy, Tanh
from nnback.optim import SGD, Adam

STATM_PATH = "/proc/self/statm"

WARMUP_CALLS = 3000
CALLS_PER_BLOCK = 3000
MEASURED_BLOCKS = 4

# Growth allowed between the end of the first measured block and the end of
# the last one, that is over (MEASURED_BLOCKS - 1) * CALLS_PER_BLOCK = 9000
# calls. Leaking one small array per call (an 8-element float32 ndarray takes
# about 150 bytes: the object, its shape and strides, and its data) would add
# about 1.3 MiB of RSS, 10 times MAX_RSS_GROWTH, and 9000 allocated blocks, 18
# times MAX_BLOCK_GROWTH. On Linux x86-64 with CPython 3.11 and NumPy 2.4 the
# RSS of most cases grew by 0 bytes and their block count by at most 12, the
# few blocks taken by this loop's own lists of measurements.
MAX_RSS_GROWTH = 128 * 1024
MAX_BLOCK_GROWTH = 500

# Saving writes and fsyncs a file, so the file cases run a tenth of the calls.
# A round trip allocates a model, a zip archive and its arrays, several kB that
# would add several MiB over the measured 900 round trips if one leaked.
SLOW_CASE_CALL_DIVISOR = 10

CASES = {}


def case(name, slow=False):
    """Register a case factory: it returns (call, arrays whose reference counts must not change)."""

    def register(factory):
        CASES[name] = (factory, slow)
        return factory

    return register


def expect_error(error_type, function, *args, **kwargs):
    """Return a call that must raise ``error_type``."""

    def call():
        try:
            function(*args, **kwargs)
        except error_type:
            return
        raise AssertionError(f"{function.__name__} did not raise {error_type.__name__}")

    return call


def random_array(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------------
# nnback.functional, both dtypes, with and without out=
# ---------------------------------------------------------------------------

DTYPE_NAMES = ["float32", "float64"]
ELEMENTWISE = ["sigmoid", "tanh", "relu"]


def register_functional_cases(dtype_name):
    dtype = np.dtype(dtype_name)

    @case(f"linear_forward-{dtype_name}")
    def linear_forward():
        x, weight, bias = random_array((8, 6), dtype), random_array((6, 5), dtype), random_array(5, dtype)
        return (lambda: functional.linear_forward(x, weight, bias)), (x, weight, bias)

    @case(f"linear_forward-out-{dtype_name}")
    def linear_forward_out():
        x, weight, bias = random_array((8, 6), dtype), random_array((6, 5), dtype), random_array(5, dtype)
        y = np.empty((8, 5), dtype)
        return (lambda: functional.linear_forward(x, weight, bias, out=y)), (x, weight, bias, y)

    @case(f"linear_backward-{dtype_name}")
    def linear_backward():
        x, weight, dy = random_array((8, 6), dtype), random_array((6, 5), dtype), random_array((8, 5), dtype)
        return (lambda: functional.linear_backward(x, weight, dy)), (x, weight, dy)

    @case(f"linear_backward-no-dx-{dtype_name}")
    def linear_backward_no_dx():
        x, weight, dy = random_array((8, 6), dtype), random_array((6, 5), dtype), random_array((8, 5), dtype)
        return (lambda: functional.linear_backward(x, weight, dy, need_dx=False)), (x, weight, dy)

    for activation in ELEMENTWISE:
        forward = getattr(functional, f"{activation}_forward")
        backward = getattr(functional, f"{activation}_backward")
        register_elementwise_cases(activation, forward, backward, dtype)

    for name in ["softmax", "log_softmax"]:
        register_row_cases(name, getattr(functional, name), dtype)

    for reduction in ["mean", "sum", "none"]:

        @case(f"softmax_cross_entropy-labels-{reduction}-{dtype_name}")
        def cross_entropy_labels(reduction=reduction):
            z = random_array((8, 5), dtype)
            labels = np.arange(8) % 5
            call = lambda: functional.softmax_cross_entropy(z, labels, reduction=reduction)  # noqa: E731
            return call, (z, labels)

    @case(f"softmax_cross_entropy-probabilities-{dtype_name}")
    def cross_entropy_probabilities():
        z = random_array((8, 5), dtype)
        targets = functional.softmax(random_array((8, 5), dtype, seed=1))
        return (lambda: functional.softmax_cross_entropy(z, targets)), (z, targets)


def register_elementwise_cases(activation, forward, backward, dtype):
    dtype_name = dtype.name

    @case(f"{activation}_forward-{dtype_name}")
    def forward_new():
        x = random_array((8, 6), dtype)
        return (lambda: forward(x)), (x,)

    @case(f"{activation}_forward-out-{dtype_name}")
    def forward_out():
        x, y = random_array((8, 6), dtype), np.empty((8, 6), dtype)
        return (lambda: forward(x, out=y)), (x, y)

    @case(f"{activation}_forward-in-place-{dtype_name}")
    def forward_in_place():
        # Values in (0, 1) stay in (0, 1) under all three functions, so the
        # loop neither overflows nor decays to denormals.
        x = np.random.default_rng(0).uniform(0.1, 0.9, (8, 6)).astype(dtype)
        return (lambda: forward(x, out=x)), (x,)

    @case(f"{activation}_backward-{dtype_name}")
    def backward_new():
        y, dy = forward(random_array((8, 6), dtype)), random_array((8, 6), dtype, seed=1)
        return (lambda: backward(y, dy)), (y, dy)

    @case(f"{activation}_backward-out-{dtype_name}")
    def backward_out():
        y, dy = forward(random_array((8, 6), dtype)), random_array((8, 6), dtype, seed=1)
        dx = np.empty((8, 6), dtype)
        return (lambda: backward(y, dy, out=dx)), (y, dy, dx)


def register_row_cases(name, function, dtype):
    dtype_name = dtype.name

    @case(f"{name}-{dtype_name}")
    def new_output():
        z = random_array((8, 5), dtype)
        return (lambda: function(z)), (z,)

    @case(f"{name}-out-{dtype_name}")
    def given_output():
        z, out = random_array((8, 5), dtype), np.empty((8, 5), dtype)
        return (lambda: function(z, out=out)), (z, out)


for _dtype_name in DTYPE_NAMES:
    register_functional_cases(_dtype_name)


@case("functional-converted-inputs")
def converted_inputs():
    # float16, integer and strided inputs take the conversion copies.
    x16 = random_array((8, 6), np.float16)
    strided = random_array((8, 12), np.float64)[:, ::2]
    integers = np.arange(30).reshape(6, 5)

    def call():
        functional.linear_forward(x16, integers)
        functional.sigmoid_forward(strided)
        functional.softmax(integers)

    return call, (x16, strided, integers)


# ---------------------------------------------------------------------------
# Calls that raise on bad input
# ---------------------------------------------------------------------------


@case("error-linear_forward-shape")
def error_linear_shape():
    x, weight = random_array((8, 6), np.float32), random_array((4, 5), np.float32)
    return expect_error(ValueError, functional.linear_forward, x, weight), (x, weight)


@case("error-linear_forward-out-dtype")
def error_linear_out_dtype():
    x, weight = random_array((8, 6), np.float32), random_array((6, 5), np.float32)
    y = np.empty((8, 5), np.float64)
    return expect_error(ValueError, functional.linear_forward, x, weight, out=y), (x, weight, y)


@case("error-sigmoid_backward-shape")
def error_sigmoid_backward_shape():
    y, dy = random_array((8, 6), np.float64), random_array((8, 5), np.float64)
    return expect_error(ValueError, functional.sigmoid_backward, y, dy), (y, dy)


@case("error-relu_forward-overlap")
def error_relu_overlap():
    buffer = random_array(20, np.float32)
    x, out = buffer[:16], buffer[4:]
    return expect_error(ValueError, functional.relu_forward, x, out=out), (buffer,)


@case("error-softmax-complex")
def error_softmax_complex():
    z = np.ones((4, 3), np.complex128)
    return expect_error(TypeError, functional.softmax, z), (z,)


@case("error-cross_entropy-label-range")
def error_cross_entropy_labels():
    z, labels = random_array((8, 5), np.float32), np.array([0, 1, 2, 3, 4, 5, 0, 1])
    return expect_error(IndexError, functional.softmax_cross_entropy, z, labels), (z, labels)


@case("error-cross_entropy-reduction")
def error_cross_entropy_reduction():
    z, labels = random_array((8, 5), np.float64), np.arange(8) % 5
    call = expect_error(ValueError, functional.softmax_cross_entropy, z, labels, reduction="max")
    return call, (z, labels)


@case("error-kernel-length")
def error_kernel_length():
    # The kernels check lengths themselves, after acquiring the buffers.
    x, y = random_array(16, np.float32), np.empty(15, np.float32)
    return expect_error(ValueError, _activations.sigmoid_forward, x, y), (x, y)


@case("error-kernel-overlap")
def error_kernel_overlap():
    buffer = random_array(20, np.float64)
    x, y = buffer[:16], buffer[4:]
    return expect_error(ValueError, _activations.tanh_forward, x, y), (buffer,)


@case("error-kernel-dtype")
def error_kernel_dtype():
    x, y = random_array(16, np.float32), np.empty(16, np.float64)
    return expect_error(ValueError, _activations.relu_forward, x, y), (x, y)


@case("error-train_step-label-range")
def error_train_step_labels():
    model, x, labels = make_model_and_batch(np.float32)
    optimizer = SGD(model.parameters(), lr=0.1)
    bad_labels = labels.copy()
    bad_labels[3] = 99
    call = expect_error(
        IndexError, nnback.train_step, model, SoftmaxCrossEntropy(), optimizer, x, bad_labels
    )
    return call, (x, bad_labels)


@case("error-train_step-input-shape")
def error_train_step_shape():
    model, x, labels = make_model_and_batch(np.float64)
    optimizer = Adam(model.parameters())
    wide = np.ones((x.shape[0], x.shape[1] + 1))
    call = expect_error(ValueError, nnback.train_step, model, SoftmaxCrossEntropy(), optimizer, wide, labels)
    return call, (wide, labels)


@case("error-DenseChain-arguments")
def error_dense_chain_arguments():
    weights = [Parameter(random_array((6, 5), np.float32))]
    call = expect_error(ValueError, _network.DenseChain, weights, [], [0])
    return call, ()


# ---------------------------------------------------------------------------
# Training through the compiled DenseChain, layers and optimizers
# ---------------------------------------------------------------------------


def make_model_and_batch(dtype, activation=ReLU):
    model = Sequential(
        Linear(6, 10, dtype=dtype, rng=0), activation(), Linear(10, 4, dtype=dtype, rng=1)
    )
    x = random_array((8, 6), dtype)
    labels = np.arange(8) % 4
    return model, x, labels


def register_training_cases(dtype_name):
    dtype = np.dtype(dtype_name)
    optimizers = {
        "SGD": lambda params: SGD(params, lr=1e-3),
        "SGD-momentum": lambda params: SGD(params, lr=1e-3, momentum=0.9, nesterov=True),
        "Adam": lambda params: Adam(params, lr=1e-4),
    }
    for optimizer_name, make_optimizer in optimizers.items():

        @case(f"train_step-{optimizer_name}-{dtype_name}")
        def train(make_optimizer=make_optimizer):
            model, x, labels = make_model_and_batch(dtype, Tanh)
            optimizer, loss = make_optimizer(model.parameters()), SoftmaxCrossEntropy()
            return (lambda: nnback.train_step(model, loss, optimizer, x, labels)), (x, labels)

    @case(f"train_step-probability-targets-{dtype_name}")
    def train_probabilities():
        # Probability targets take the layer-by-layer path instead of the DenseChain.
        model, x, _ = make_model_and_batch(dtype, Sigmoid)
        targets = functional.softmax(random_array((8, 4), dtype, seed=2))
        optimizer, loss = SGD(model.parameters(), lr=1e-3), SoftmaxCrossEntropy("sum")
        return (lambda: nnback.train_step(model, loss, optimizer, x, targets)), (x, targets)

    @case(f"layers-forward-backward-{dtype_name}")
    def layers_forward_backward():
        model, x, labels = make_model_and_batch(dtype)
        loss = SoftmaxCrossEntropy()

        def call():
            loss.forward(model.forward(x), labels)
            model.backward(loss.backward(), need_dx=True)
            model.predict(x)

        return call, (x, labels)

    @case(f"layers-activations-{dtype_name}")
    def layers_activations():
        layers = [ReLU(), Sigmoid(), Tanh()]
        x, dy = random_array((8, 6), dtype), random_array((8, 6), dtype, seed=1)

        def call():
            for layer in layers:
                layer.forward(x)
                layer.backward(dy)

        return call, (x, dy)

    @case(f"DenseChain-build-and-step-{dtype_name}")
    def dense_chain_build():
        # A new chain each call allocates and frees its C tables and work buffers.
        model, x, labels = make_model_and_batch(dtype)
        linears = [model.layers[0], model.layers[2]]
        weights = [layer.weight for layer in linears]
        biases = [layer.bias for layer in linears]
        codes = [_network.Activation.RELU, _network.Activation.IDENTITY]

        def call():
            chain = _network.DenseChain(weights, biases, codes)
            chain.train_step(x, labels, False)

        return call, (x, labels)

    @case(f"optimizer-steps-{dtype_name}")
    def optimizer_steps():
        params = [Parameter(random_array(shape, dtype)) for shape in [(6, 10), (10,), (1,)]]
        for param in params:
            param.grad[...] = random_array(param.shape, dtype, seed=3)
        optimizers = [
            SGD(params, lr=1e-4),
            SGD(params, lr=1e-4, momentum=0.5, weight_decay=0.01),
            Adam(params, lr=1e-5),
        ]

        def call():
            for optimizer in optimizers:
                optimizer.step()

        return call, tuple(param.data for param in params)


for _dtype_name in DTYPE_NAMES:
    register_training_cases(_dtype_name)


# ---------------------------------------------------------------------------
# Save and load
# ---------------------------------------------------------------------------


@case("save-load-round-trip", slow=True)
def save_load():
    model, _, _ = make_model_and_batch(np.float32)
    path = os.path.join(tempfile.mkdtemp(prefix="nnback-memory-"), "model.npz")

    def call():
        nnback.serialization.save(model, path)
        nnback.load(path)

    return call, ()


@case("error-load-invalid-file", slow=True)
def load_invalid_file():
    path = os.path.join(tempfile.mkdtemp(prefix="nnback-memory-"), "broken.npz")
    with open(path, "wb") as file:
        file.write(b"PK\x03\x04 this is not a complete zip archive")
    return expect_error(ValueError, nnback.load, path), ()


# ---------------------------------------------------------------------------
# Child process: run the cases and print the measurements
# ---------------------------------------------------------------------------


def resident_bytes():
    with open(STATM_PATH) as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def measure(name):
    """Run one case and return its RSS, block counts and reference counts."""
    factory, slow = CASES[name]
    call, arrays = factory()
    divisor = SLOW_CASE_CALL_DIVISOR if slow else 1
    warmup_calls, block_calls = WARMUP_CALLS // divisor, CALLS_PER_BLOCK // divisor

    for _ in range(warmup_calls):
        call()
    gc.collect()
    references_before = [sys.getrefcount(array) for array in arrays]

    rss, blocks = [], []
    for _ in range(MEASURED_BLOCKS):
        for _ in range(block_calls):
            call()
        gc.collect()
        rss.append(resident_bytes())
        blocks.append(sys.getallocatedblocks())

    references_after = [sys.getrefcount(array) for array in arrays]
    return {
        "case": name,
        "calls_per_block": block_calls,
        "rss": rss,
        "blocks": blocks,
        "references_before": references_before,
        "references_after": references_after,
    }


def main(names):
    for name in names or CASES:
        print(json.dumps(measure(name)), flush=True)


@pytest.fixture(scope="module")
def measurements():
    if not os.path.exists(STATM_PATH):
        pytest.skip(f"RSS is read from {STATM_PATH}, which this platform does not have")
    completed = subprocess.run(
        [sys.executable, __file__], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, (
        f"the memory workload exited with status {completed.returncode}:\n{completed.stderr}"
    )
    results = [json.loads(line) for line in completed.stdout.splitlines()]
    return {result["case"]: result for result in results}

@pytest.mark.parametrize("name", list(CASES))
def test_memory_stays_flat(measurements, name):
    result = measurements[name]
    rss, blocks = result["rss"], result["blocks"]
    n_calls = result["calls_per_block"] * (len(rss) - 1)

    rss_growth = rss[-1] - rss[0]
    assert rss_growth <= MAX_RSS_GROWTH, (
        f"{name}: RSS grew by {rss_growth} bytes over {n_calls} calls "
        f"(after each block: {rss}), more than {MAX_RSS_GROWTH}"
    )
    block_growth = blocks[-1] - blocks[0]
    assert block_growth <= MAX_BLOCK_GROWTH, (
        f"{name}: Python's allocated blocks grew by {block_growth} over {n_calls} calls "
        f"(after each block: {blocks}), more than {MAX_BLOCK_GROWTH}"
    )
    assert result["references_after"] == result["references_before"], (
        f"{name}: reference counts of the case's arrays changed from "
        f"{result['references_before']} to {result['references_after']}"
    )

@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_cases_cover_functional(dtype_name):
    for function_name in functional.__all__:
        covering = [
            name for name in CASES
            if name.startswith(f"{function_name}-") and name.endswith(dtype_name)
        ]
        assert covering, f"no memory case calls functional.{function_name} with {dtype_name}"
        if function_name not in ("linear_backward", "softmax_cross_entropy"):
            assert f"{function_name}-out-{dtype_name}" in covering, function_name


if __name__ == "__main__":
    main(sys.argv[1:])
