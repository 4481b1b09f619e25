"""Accuracy of the vectorized exp, sigmoid and tanh of nnback/_fastmath.h.

The error of a result is measured in units in the last place (ulp) of the exact
value v: |computed - v| / ulp(v), where ulp(v) is the spacing of the output
dtype in the binade of |v| (2^-149 for float32 and 2^-1074 for float64 in the
subnormal range). float32 results are checked against float64 references.
float64 results are checked against np.longdouble references, so those tests
need the x87 80-bit format or a wider one, and skip where long double is double.

A result counts as exact when it and the rounded reference are the same
infinity, and as infinitely wrong when only one of the two is infinite.
"""

import numpy as np
import pytest

from nnback import _activations

# Documented bounds, in ulp of the output dtype, for every input.
MAX_ULP = {"exp": 1.1, "sigmoid": 2.5, "tanh": 3.0}

LONGDOUBLE_IS_WIDER = np.finfo(np.longdouble).nmant >= 63

# Step between float32 bit patterns of the strided sweeps. An odd step visits
# every value of the low mantissa bits.
SWEEP_STEP_F32 = 211
# Bit patterns checked exhaustively on both sides of each boundary point.
NEIGHBORHOOD = 1 << 15


def ulp_error(computed, exact, dtype):
    """Return |computed - exact| in ulp of ``dtype`` at ``exact``, elementwise.

    ``exact`` is an array of a wider dtype than ``computed``.
    """
    dtype = np.dtype(dtype)
    finfo = np.finfo(dtype)
    wide = exact.dtype.type

    _, exponent = np.frexp(exact)
    exponent = np.maximum(exponent.astype(np.int64) - 1, finfo.minexp)
    ulp = np.ldexp(wide(1), exponent - finfo.nmant)

    with np.errstate(invalid="ignore", over="ignore"):
        error = np.abs(computed.astype(exact.dtype) - exact) / ulp
        exact_rounded = exact.astype(dtype)

    # Infinite results are right exactly when the exact value rounds to the same infinity.
    either_inf = np.isinf(computed) | np.isinf(exact_rounded)
    error = np.where(either_inf, np.where(computed == exact_rounded, 0.0, np.inf), error)
    # NaN results are right exactly when the reference is NaN.
    either_nan = np.isnan(computed) | np.isnan(exact)
    error = np.where(either_nan, np.where(np.isnan(computed) == np.isnan(exact), 0.0, np.inf), error)
    return error


def float32_magnitudes(limit, step):
    """Return every ``step``-th float32 in [0, limit], by bit pattern."""
    limit_bits = int(np.array(limit, dtype=np.float32).view(np.uint32))
    return np.arange(0, limit_bits + 1, step, dtype=np.uint32).view(np.float32)


def float32_range(low, high, step):
    """Return every ``step``-th float32 in [low, high] (low < 0 < high), by bit pattern."""
    return np.concatenate([-float32_magnitudes(-low, step), float32_magnitudes(high, step)])


def float32_neighborhood(center, count=NEIGHBORHOOD):
    """Return the ``count`` float32 values on each side of ``center``, by bit pattern.

    Around +-0 the values on the far side of zero are left out, so pass 0.0 and
    -0.0 to cover both signs.
    """
    center = np.float32(center)
    bits = int(np.abs(center).view(np.uint32))
    low = max(bits - count, 0)
    values = np.arange(low, bits + count + 1, dtype=np.uint32).view(np.float32)
    return -values if np.signbit(center) else values


def all_finite_float32(step):
    """Return every ``step``-th finite float32 by bit pattern, both signs."""
    values = float32_magnitudes(np.finfo(np.float32).max, step)
    return np.concatenate([values, -values])


def run_kernel(kernel, x):
    out = np.empty_like(x)
    kernel(x, out)
    return out


def sigmoid_exact(x):
    """Return sigmoid(x) in the dtype of x (float64 or longdouble) without overflow."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def max_error_report(error, x):
    worst = int(np.argmax(error))
    return f"max error {error[worst]:.3f} ulp at x = {x[worst]!r}"


# ---- float32 ---------------------------------------------------------------------


def exp_float32_inputs():
    special_points = [
        0.0,
        -0.0,
        -87.33654,  # e^x crosses the smallest normal float32
        -103.27893,  # e^x crosses the smallest subnormal float32
        -103.97208,  # e^x crosses half the smallest subnormal float32
        88.72284,  # e^x crosses the largest float32
        0.34657359,  # x = ln2 / 2, where the rounding of x / ln2 changes
        -0.34657359,
    ]
    parts = [float32_range(-104.0, 89.0, SWEEP_STEP_F32)]
    parts += [float32_neighborhood(point) for point in special_points]
    return np.concatenate(parts)


def test_exp_float32_dense_sweep():
    x = exp_float32_inputs()
    computed = run_kernel(_activations.exp_for_tests, x)
    error = ulp_error(computed, np.exp(x.astype(np.float64)), np.float32)
    assert error.max() <= MAX_ULP["exp"], max_error_report(error, x)


def largest_input_with_finite_exp(dtype, wide):
    """Return the largest x of ``dtype`` whose exact e^x is below the dtype's maximum."""
    limit = np.log(wide(np.finfo(dtype).max))
    x = dtype(limit)
    if wide(x) > limit:
        x = np.nextafter(x, dtype(-np.inf))
    return x


def test_exp_float32_overflow_boundary():
    largest_finite_input = largest_input_with_finite_exp(np.float32, np.float64)
    x = np.array([largest_finite_input, np.nextafter(largest_finite_input, np.float32(np.inf))])
    computed = run_kernel(_activations.exp_for_tests, x)
    assert np.isfinite(computed[0])
    assert computed[1] == np.inf


def test_exp_float32_subnormal_results():
    x = np.linspace(-103.9, -87.4, 100_001, dtype=np.float32)
    computed = run_kernel(_activations.exp_for_tests, x)
    error = ulp_error(computed, np.exp(x.astype(np.float64)), np.float32)
    assert np.all(computed < np.finfo(np.float32).smallest_normal)
    assert error.max() <= MAX_ULP["exp"], max_error_report(error, x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_exp_special_values(dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    x = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, tiny, -tiny, 1e4, -1e4], dtype=dtype)
    computed = run_kernel(_activations.exp_for_tests, x)
    assert computed[0] == 1.0
    assert computed[1] == 1.0
    assert np.isnan(computed[2])
    assert computed[3] == np.inf
    assert computed[4] == 0.0
    assert computed[5] == 1.0
    assert computed[6] == 1.0
    assert computed[7] == np.inf
    assert computed[8] == 0.0


def test_sigmoid_float32_sweep():
    x = np.concatenate([all_finite_float32(1021), float32_range(-104.0, 20.0, SWEEP_STEP_F32)])
    computed = run_kernel(_activations.sigmoid_forward, x)
    error = ulp_error(computed, sigmoid_exact(x.astype(np.float64)), np.float32)
    assert error.max() <= MAX_ULP["sigmoid"], max_error_report(error, x)


def test_tanh_float32_sweep():
    x = np.concatenate([all_finite_float32(1021), float32_range(-10.0, 10.0, SWEEP_STEP_F32)])
    computed = run_kernel(_activations.tanh_forward, x)
    error = ulp_error(computed, np.tanh(x.astype(np.float64)), np.float32)
    assert error.max() <= MAX_ULP["tanh"], max_error_report(error, x)


def test_tanh_float32_tiny_inputs_keep_relative_accuracy():
    x = np.geomspace(1e-38, 0.5, 200_001, dtype=np.float32)
    x = np.concatenate([x, -x])
    computed = run_kernel(_activations.tanh_forward, x)
    error = ulp_error(computed, np.tanh(x.astype(np.float64)), np.float32)
    assert error.max() <= MAX_ULP["tanh"], max_error_report(error, x)


# ---- float64 ---------------------------------------------------------------------


def float64_inputs(low, high, n, seed):
    """Return uniform values in [low, high], values of random bit patterns folded
    into [-1, 1], and a geometric sweep of tiny magnitudes, all float64."""
    rng = np.random.default_rng(seed)
    uniform = rng.uniform(low, high, n)
    random_bits = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False).view(np.float64)
    random_bits = random_bits[np.isfinite(random_bits)]
    folded = np.fmod(random_bits, 1.0)
    tiny = np.geomspace(1e-300, 1e-3, n // 4)
    return np.concatenate([uniform, folded, tiny, -tiny])


needs_wide_longdouble = pytest.mark.skipif(
    not LONGDOUBLE_IS_WIDER, reason="np.longdouble is not wider than float64 here"
)


@needs_wide_longdouble
def test_exp_float64_sweep():
    x = float64_inputs(-746.0, 710.0, 1_000_000, seed=1)
    x = np.concatenate([x, np.linspace(-745.2, -708.3, 100_001)])  # subnormal results
    computed = run_kernel(_activations.exp_for_tests, x)
    error = ulp_error(computed, np.exp(x.astype(np.longdouble)), np.float64)
    assert error.max() <= MAX_ULP["exp"], max_error_report(error, x)


@needs_wide_longdouble
def test_exp_float64_overflow_boundary():
    largest_finite_input = largest_input_with_finite_exp(np.float64, np.longdouble)
    x = np.array([largest_finite_input, np.nextafter(largest_finite_input, np.inf)])
    computed = run_kernel(_activations.exp_for_tests, x)
    assert np.isfinite(computed[0])
    assert computed[1] == np.inf


@needs_wide_longdouble
def test_sigmoid_float64_sweep():
    x = float64_inputs(-750.0, 40.0, 1_000_000, seed=2)
    computed = run_kernel(_activations.sigmoid_forward, x)
    error = ulp_error(computed, sigmoid_exact(x.astype(np.longdouble)), np.float64)
    assert error.max() <= MAX_ULP["sigmoid"], max_error_report(error, x)


@needs_wide_longdouble
def test_tanh_float64_sweep():
    x = float64_inputs(-20.0, 20.0, 1_000_000, seed=3)
    computed = run_kernel(_activations.tanh_forward, x)
    error = ulp_error(computed, np.tanh(x.astype(np.longdouble)), np.float64)
    assert error.max() <= MAX_ULP["tanh"], max_error_report(error, x)


# ---- the error measure itself ----------------------------------------------------


def test_ulp_error_counts_one_step_as_one_ulp():
    exact = np.array([1.0, 1e-30, 2.0**-140], dtype=np.float32).astype(np.float64)
    computed = np.nextafter(exact.astype(np.float32), np.float32(np.inf))
    error = ulp_error(computed, exact, np.float32)
    np.testing.assert_allclose(error, 1.0)


def test_ulp_error_of_wrong_infinity_is_infinite():
    exact = np.array([1e38, 1e39], dtype=np.float64)
    computed = np.array([np.inf, np.float32(3.4e38)], dtype=np.float32)
    error = ulp_error(computed, exact, np.float32)
    assert error[0] == np.inf
    assert error[1] == np.inf
