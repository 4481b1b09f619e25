"""Tests of the compiled activation kernels in nnback._activations.

Each kernel is compared with its formula evaluated by NumPy in float64, or with
the same formula in the kernel's dtype where the result must be bitwise equal.
The cases are ordinary values, special values (+-inf, NaN, +-0, +-1000,
subnormals), in-place calls, empty arrays, and every short length at aligned
and unaligned offsets.
"""

import numpy as np
import pytest

from nnback import _activations

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]

# Relative and absolute tolerances against float64 formulas. The relative part
# covers a few ulp of the kernel dtype, and the absolute part covers subnormal results.
RTOL = {np.float32: 4e-7, np.float64: 1e-15}
ATOL = {np.float32: 4 * 2.0**-149, np.float64: 4 * 2.0**-1074}
EPS = {np.float32: float(np.finfo(np.float32).eps), np.float64: float(np.finfo(np.float64).eps)}

FORWARD = ["sigmoid", "tanh", "relu"]


def sigmoid_exact(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def relu_exact(x):
    return np.where(np.isnan(x), x, np.where(x > 0, x, 0.0))


def relu_mask(y):
    return np.where(np.isnan(y), y, np.where(y > 0, 1.0, 0.0)).astype(y.dtype)


FORWARD_EXACT = {"sigmoid": sigmoid_exact, "tanh": np.tanh, "relu": relu_exact}


def backward_in_dtype(name, y, dy):
    """Return the backward formula evaluated by NumPy in the dtype of y."""
    one_in_dtype = y.dtype.type(1)
    with np.errstate(invalid="ignore", over="ignore"):
        if name == "sigmoid":
            return dy * y * (one_in_dtype - y)
        if name == "tanh":
            return dy * (one_in_dtype - y * y)
        return dy * relu_mask(y)


def forward(name, x, out=None):
    out = np.empty_like(x) if out is None else out
    getattr(_activations, f"{name}_forward")(x, out)
    return out


def backward(name, y, dy, out=None):
    out = np.empty_like(y) if out is None else out
    getattr(_activations, f"{name}_backward")(y, dy, out)
    return out


def random_inputs(n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) * 4).astype(dtype)


# ---- forward ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", FORWARD)
def test_forward_matches_float64_formula(name, dtype):
    x = random_inputs(10_001, dtype)
    expected = FORWARD_EXACT[name](x.astype(np.float64))
    np.testing.assert_allclose(forward(name, x), expected, rtol=RTOL[dtype], atol=ATOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sigmoid_forward_special_values(dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    huge = np.finfo(dtype).max
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1000.0, -1000.0, tiny, -tiny, huge, -huge],
                 dtype=dtype)
    y = forward("sigmoid", x)
    assert y[0] == 1.0
    assert y[1] == 0.0
    assert np.isnan(y[2])
    assert y[3] == 0.5
    assert y[4] == 0.5
    assert y[5] == 1.0
    assert y[6] == 0.0
    assert y[7] == 0.5
    assert y[8] == 0.5
    assert y[9] == 1.0
    assert y[10] == 0.0


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sigmoid_forward_no_overflow_warning(dtype):
    x = np.array([-1e4, -800.0, -100.0, 100.0, 800.0, 1e4], dtype=dtype)
    with np.errstate(all="raise"):
        y = forward("sigmoid", x)
    assert np.all(np.isfinite(y))
    assert np.all((y >= 0) & (y <= 1))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sigmoid_forward_tiny_results_keep_relative_accuracy(dtype):
    # sigmoid(x) ~ e^x for x << 0, where 1 / (1 + e^-x) would overflow to 0 early.
    x = np.array([-30.0, -60.0, -80.0], dtype=dtype)
    expected = sigmoid_exact(x.astype(np.float64))
    np.testing.assert_allclose(forward("sigmoid", x), expected, rtol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_tanh_forward_special_values(dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    huge = np.finfo(dtype).max
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1000.0, -1000.0, tiny, -tiny, huge, -huge],
                 dtype=dtype)
    y = forward("tanh", x)
    assert y[0] == 1.0
    assert y[1] == -1.0
    assert np.isnan(y[2])
    assert y[3] == 0.0
    assert not np.signbit(y[3])
    assert y[4] == 0.0
    assert np.signbit(y[4])
    assert y[5] == 1.0
    assert y[6] == -1.0
    assert y[7] == tiny
    assert y[8] == -tiny
    assert y[9] == 1.0
    assert y[10] == -1.0


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_tanh_forward_small_inputs_keep_relative_accuracy(dtype):
    x = np.geomspace(1e-30, 0.1, 1001).astype(dtype)
    expected = np.tanh(x.astype(np.float64))
    np.testing.assert_allclose(forward("tanh", x), expected, rtol=RTOL[dtype])
    np.testing.assert_allclose(forward("tanh", -x), -expected, rtol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_tanh_forward_is_odd(dtype):
    x = random_inputs(4097, dtype, seed=5)
    np.testing.assert_array_equal(forward("tanh", -x), -forward("tanh", x))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_relu_forward_special_values(dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    huge = np.finfo(dtype).max
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1000.0, -1000.0, tiny, -tiny, huge, -huge],
                 dtype=dtype)
    y = forward("relu", x)
    assert y[0] == np.inf
    assert y[1] == 0.0
    assert np.isnan(y[2])
    assert y[3] == 0.0
    assert y[4] == 0.0
    assert y[5] == 1000.0
    assert y[6] == 0.0
    assert y[7] == tiny
    assert y[8] == 0.0
    assert y[9] == huge
    assert y[10] == 0.0


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_relu_forward_is_exact(dtype):
    x = random_inputs(10_001, dtype)
    np.testing.assert_array_equal(forward("relu", x), np.maximum(x, dtype(0)))


# ---- backward --------------------------------------------------------------------


def backward_inputs(name, n, dtype, seed=1):
    y = forward(name, random_inputs(n, dtype, seed))
    dy = random_inputs(n, dtype, seed + 1)
    return y, dy


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ["sigmoid", "relu"])
def test_backward_is_bitwise_numpy_formula(name, dtype):
    # Neither formula has a product inside a sum, so no fused multiply-add can
    # change the rounding.
    y, dy = backward_inputs(name, 10_001, dtype)
    np.testing.assert_array_equal(backward(name, y, dy), backward_in_dtype(name, y, dy))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_tanh_backward_matches_float64_formula(dtype):
    # 1 - y * y may be computed with one rounding (FMA) or two, so the error bound
    # is eps * |dy| (the rounding of y * y) plus a few ulp of the result.
    y, dy = backward_inputs("tanh", 10_001, dtype)
    y64, dy64 = y.astype(np.float64), dy.astype(np.float64)
    expected = dy64 * (1 - y64 * y64)
    error = np.abs(backward("tanh", y, dy) - expected)
    bound = RTOL[dtype] * np.abs(expected) + EPS[dtype] * np.abs(dy64)
    assert np.all(error <= bound), f"max excess {np.max(error - bound)}"


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sigmoid_backward_matches_float64_formula(dtype):
    y, dy = backward_inputs("sigmoid", 10_001, dtype)
    y64, dy64 = y.astype(np.float64), dy.astype(np.float64)
    expected = dy64 * y64 * (1 - y64)
    np.testing.assert_allclose(backward("sigmoid", y, dy), expected, rtol=RTOL[dtype],
                               atol=ATOL[dtype])


SPECIAL_Y = [np.nan, 1.0, 0.0, -0.0, -1.0, 0.5, np.inf, -np.inf, 2.0]
SPECIAL_DY = [np.inf, -np.inf, np.nan, 0.0, -0.0, 1.0, -3.0]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", FORWARD)
def test_backward_special_values_follow_ieee_products(name, dtype):
    y, dy = (np.array(v, dtype=dtype) for v in np.meshgrid(SPECIAL_Y, SPECIAL_DY))
    y, dy = y.ravel(), dy.ravel()
    expected = backward_in_dtype(name, y, dy)
    computed = backward(name, y, dy)
    np.testing.assert_array_equal(computed, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_relu_backward_mask_cases(dtype):
    y = np.array([2.0, 0.0, -0.0, -1.0, np.nan, 0.0, -1.0, 3.0], dtype=dtype)
    dy = np.array([5.0, 5.0, 5.0, 5.0, 5.0, np.inf, np.nan, np.inf], dtype=dtype)
    dx = backward("relu", y, dy)
    assert dx[0] == 5.0
    assert dx[1] == 0.0
    assert dx[2] == 0.0
    assert dx[3] == 0.0
    assert np.isnan(dx[4])
    assert np.isnan(dx[5])
    assert np.isnan(dx[6])
    assert dx[7] == np.inf


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sigmoid_backward_nan_and_inf(dtype):
    y = np.array([np.nan, 0.5, 1.0, 0.0], dtype=dtype)
    dy = np.array([1.0, np.inf, np.inf, 1.0], dtype=dtype)
    dx = backward("sigmoid", y, dy)
    assert np.isnan(dx[0])
    assert dx[1] == np.inf
    assert np.isnan(dx[2])
    assert dx[3] == 0.0


# ---- aliasing, lengths, dtypes ----------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", FORWARD)
def test_forward_in_place(name, dtype):
    x = random_inputs(1000, dtype)
    expected = forward(name, x)
    buffer = x.copy()
    forward(name, buffer, out=buffer)
    np.testing.assert_array_equal(buffer, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", FORWARD)
@pytest.mark.parametrize("alias", ["dx_is_y", "dx_is_dy"])
def test_backward_in_place(name, dtype, alias):
    y, dy = backward_inputs(name, 1000, dtype)
    expected = backward(name, y, dy)
    y_buffer, dy_buffer = y.copy(), dy.copy()
    out = y_buffer if alias == "dx_is_y" else dy_buffer
    backward(name, y_buffer, dy_buffer, out=out)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", FORWARD)
def test_forward_rejects_partial_overlap(name, dtype):
    buffer = random_inputs(101, dtype)
    with pytest.raises(ValueError, match="partially overlaps"):
        forward(name, buffer[:100], out=buffer[1:])


@pytest.mark.parametrize("name", FORWARD)
def test_backward_rejects_partial_overlap(name):
    y, dy = backward_inputs(name, 101, np.float32)
    with pytest.raises(ValueError, match="dx partially overlaps y"):
        backward(name, y[1:], dy[1:], out=y[:100])
    with pytest.raises(ValueError, match="dx partially overlaps dy"):
        backward(name, y[1:], dy[1:], out=dy[:100])


@pytest.mark.parametrize("name", FORWARD)
def test_length_mismatch_is_rejected(name):
    x = np.zeros(10, dtype=np.float32)
    with pytest.raises(ValueError, match="y has 9 elements, expected 10"):
        forward(name, x, out=np.zeros(9, dtype=np.float32))
    with pytest.raises(ValueError, match="dy has 11 elements, expected 10"):
        backward(name, x, np.zeros(11, dtype=np.float32))
    with pytest.raises(ValueError, match="dx has 0 elements, expected 10"):
        backward(name, x, x, out=np.zeros(0, dtype=np.float32))


@pytest.mark.parametrize("name", FORWARD)
def test_mixed_dtypes_are_rejected(name):
    # Cython's fused-type dispatch picks float32 from x and rejects the float64 output.
    with pytest.raises(ValueError, match="dtype mismatch"):
        forward(name, np.zeros(4, dtype=np.float32), out=np.zeros(4, dtype=np.float64))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", FORWARD)
def test_empty_arrays(name, dtype):
    empty = np.empty(0, dtype=dtype)
    assert forward(name, empty).shape == (0,)
    assert backward(name, empty, empty).shape == (0,)


@pytest.mark.parametrize("name", FORWARD)
def test_read_only_inputs_are_accepted(name):
    x = random_inputs(100, np.float64)
    x.flags.writeable = False
    y = forward(name, x)
    y.flags.writeable = False
    dx = backward(name, y, x)
    assert dx.shape == (100,)


@pytest.mark.parametrize("name", FORWARD)
def test_read_only_output_is_rejected(name):
    x = random_inputs(10, np.float64)
    out = np.empty_like(x)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        forward(name, x, out=out)


# ---- vector tails and alignment ------------------------------------------------

TAIL_LENGTHS = list(range(70)) + [127, 128, 129, 1023]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", FORWARD)
def test_every_length_and_offset_matches(name, dtype):
    # Vectorized loops handle a remainder of n modulo the vector width, and slices
    # starting one element in are not aligned to the vector width.
    n_max = max(TAIL_LENGTHS) + 1
    x = random_inputs(n_max + 1, dtype, seed=7)
    dy = random_inputs(n_max + 1, dtype, seed=8)
    y = forward(name, x)
    dx = backward(name, y, dy)
    for n in TAIL_LENGTHS:
        for offset in (0, 1):
            window = slice(offset, offset + n)
            np.testing.assert_array_equal(forward(name, x[window]), y[window])
            np.testing.assert_array_equal(backward(name, y[window], dy[window]), dx[window])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", FORWARD)
def test_long_array_matches_short_chunks(name, dtype):
    n = 3 * 2**16 + 5
    x = random_inputs(n, dtype, seed=9)
    dy = random_inputs(n, dtype, seed=10)
    y = forward(name, x)
    dx = backward(name, y, dy)
    chunk = 4099
    for start in range(0, n, chunk):
        window = slice(start, start + chunk)
        np.testing.assert_array_equal(y[window], forward(name, x[window]))
        np.testing.assert_array_equal(dx[window], backward(name, y[window], dy[window]))
