"""Concurrent calls from several threads give the serial results bit for bit.

The kernels release the GIL, so four threads really run them at the same time.
Each thread works on its own data, and every result must equal, byte for byte,
the result of the same call made alone.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from nnback import functional

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
