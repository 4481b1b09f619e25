"""The compiled functional API against nnback.reference, finite differences and exact cases."""

import numpy as np
import pytest

from nnback import functional, reference

# Every call below must run without NumPy warnings: overflow, inf - inf and the
# mean over an empty batch are IEEE results, not errors.
pytestmark = pytest.mark.filterwarnings("error")

DTYPES = [np.float32, np.float64]

# Compiled result against the reference in the same dtype.
PARITY_TOLERANCE = {
    np.float32: dict(rtol=2e-5, atol=2e-5),
    np.float64: dict(rtol=1e-12, atol=1e-12),
}

# A float32 analytic gradient against the float64 analytic gradient.
FLOAT32_GRADIENT_TOLERANCE = dict(rtol=1e-4, atol=1e-5)

# A float64 analytic gradient against float64 central differences.
FINITE_DIFFERENCE_STEP = 1e-6
FINITE_DIFFERENCE_TOLERANCE = dict(rtol=1e-6, atol=1e-8)

# (B, n_features, n_outputs): batch, inputs and outputs all differ, and each may be 0.
LINEAR_SHAPES = [(5, 3, 4), (7, 9, 2), (1, 6, 1), (2, 1, 8), (0, 3, 4), (4, 0, 3), (4, 3, 0), (0, 0, 0)]

ELEMENTWISE_SHAPES = [(7,), (3, 4), (2, 3, 5), (), (0,), (0, 5), (4, 0)]

# (B, C) logits.
LOGIT_SHAPES = [(4, 5), (1, 1), (3, 1), (1, 7), (6, 3), (0, 4)]

# Every integer dtype that NumPy has, including the platform aliases.
INTEGER_DTYPES = sorted({np.dtype(code) for code in np.typecodes["AllInteger"]}, key=str)

ACTIVATIONS = ["sigmoid", "tanh", "relu"]
REDUCTIONS = ["mean", "sum", "none"]

LAYOUTS = ["fortran", "strided", "transposed", "readonly", "byteswapped"]

SPECIAL_VALUES = [0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5, 20.0, -20.0, 100.0, -100.0, 1e4, -1e4,
                  np.inf, -np.inf, np.nan]


def shape_id(shape):
    return "x".join(str(size) for size in shape) or "scalar"


def dtype_id(dtype):
    return np.dtype(dtype).name


def forward_of(name):
    return getattr(functional, f"{name}_forward"), getattr(reference, f"{name}_forward")


def backward_of(name):
    return getattr(functional, f"{name}_backward"), getattr(reference, f"{name}_backward")


@pytest.fixture
def activations():
    """Skip until the compiled activation kernels are built."""
    return pytest.importorskip("nnback._activations")


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


def with_layout(array, layout):
    """Return an array equal to ``array`` but stored with the named layout."""
    array = np.asarray(array)
    if layout == "fortran":
        return np.asfortranarray(array)
    if layout == "strided":
        if array.ndim == 0:
            return array
        wide = np.zeros(array.shape[:-1] + (2 * array.shape[-1],), dtype=array.dtype)
        wide[..., ::2] = array
        return wide[..., ::2]
    if layout == "transposed":
        return np.ascontiguousarray(array.T).T
    if layout == "readonly":
        copy = array.copy()
        copy.flags.writeable = False
        return copy
    if layout == "byteswapped":
        return array.astype(array.dtype.newbyteorder("S"))
    raise AssertionError(f"unknown layout {layout}")


def assert_parity(actual, expected, dtype):
    """Assert dtype, shape and values (NaN where expected) of a compiled result."""
    assert isinstance(actual, np.ndarray)
    assert actual.dtype == np.dtype(dtype)
    assert actual.shape == expected.shape
    assert actual.flags.c_contiguous
    np.testing.assert_allclose(actual, expected, equal_nan=True, **PARITY_TOLERANCE[dtype])


def assert_loss_parity(actual, expected, dtype):
    if isinstance(expected, np.ndarray):
        assert_parity(actual, expected, dtype)
    else:
        assert isinstance(actual, float)
        np.testing.assert_allclose(actual, expected, equal_nan=True, **PARITY_TOLERANCE[dtype])


def central_differences(function, array):
    """Return d function(array) / d array by float64 central differences."""
    array = np.array(array, dtype=np.float64)
    gradient = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        original = array[index]
        array[index] = original + FINITE_DIFFERENCE_STEP
        upper = function(array)
        array[index] = original - FINITE_DIFFERENCE_STEP
        lower = function(array)
        array[index] = original
        gradient[index] = (upper - lower) / (2 * FINITE_DIFFERENCE_STEP)
    return gradient


def random_probabilities(rng, shape, dtype):
    """Return non-negative targets whose rows do not sum to 1, with some exact zeros."""
    targets = rng.random(shape)
    targets[targets < 0.2] = 0.0
    return targets.astype(dtype)


# ---------------------------------------------------------------------------
# Linear layer
# ---------------------------------------------------------------------------


def linear_inputs(rng, shape, dtype):
    n_rows, n_features, n_outputs = shape
    x = rng.standard_normal((n_rows, n_features)).astype(dtype)
    weight = rng.standard_normal((n_features, n_outputs)).astype(dtype)
    bias = rng.standard_normal(n_outputs).astype(dtype)
    dy = rng.standard_normal((n_rows, n_outputs)).astype(dtype)
    return x, weight, bias, dy


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=shape_id)
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
def test_linear_forward_matches_reference(rng, dtype, shape, use_bias):
    x, weight, bias, _ = linear_inputs(rng, shape, dtype)
    bias = bias if use_bias else None

    y = functional.linear_forward(x, weight, bias)

    assert_parity(y, reference.linear_forward(x, weight, bias), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=shape_id)
def test_linear_backward_matches_reference(rng, dtype, shape):
    x, weight, _, dy = linear_inputs(rng, shape, dtype)

    dx, dweight, dbias = functional.linear_backward(x, weight, dy)
    expected_dx, expected_dweight, expected_dbias = reference.linear_backward(x, weight, dy)

    assert_parity(dx, expected_dx, dtype)
    assert_parity(dweight, expected_dweight, dtype)
    assert_parity(dbias, expected_dbias, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_linear_backward_skips_dx(rng, dtype):
    x, weight, _, dy = linear_inputs(rng, (5, 3, 4), dtype)

    dx, dweight, dbias = functional.linear_backward(x, weight, dy, need_dx=False)
    _, expected_dweight, expected_dbias = reference.linear_backward(x, weight, dy)

    assert dx is None
    assert_parity(dweight, expected_dweight, dtype)
    assert_parity(dbias, expected_dbias, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_linear_empty_batch_gives_zero_gradients(dtype):
    x = np.empty((0, 3), dtype=dtype)
    weight = np.ones((3, 2), dtype=dtype)
    dy = np.empty((0, 2), dtype=dtype)

    dx, dweight, dbias = functional.linear_backward(x, weight, dy)

    assert dx.shape == (0, 3)
    np.testing.assert_array_equal(dweight, np.zeros((3, 2), dtype=dtype))
    np.testing.assert_array_equal(dbias, np.zeros(2, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_linear_no_features_gives_bias_rows(dtype):
    x = np.empty((3, 0), dtype=dtype)
    weight = np.empty((0, 2), dtype=dtype)
    bias = np.array([1.5, -2.0], dtype=dtype)

    with_bias = functional.linear_forward(x, weight, bias)
    without_bias = functional.linear_forward(x, weight)
    dx, dweight, dbias = functional.linear_backward(x, weight, np.ones((3, 2), dtype=dtype))

    np.testing.assert_array_equal(with_bias, np.tile(bias, (3, 1)))
    np.testing.assert_array_equal(without_bias, np.zeros((3, 2), dtype=dtype))
    assert dx.shape == (3, 0)
    assert dweight.shape == (0, 2)
    np.testing.assert_array_equal(dbias, np.full(2, 3, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_linear_hand_computed_values(dtype):
    x = np.array([[1.0, 2.0], [3.0, -1.0], [0.0, 0.5]], dtype=dtype)
    weight = np.array([[1.0, 0.0, -1.0], [2.0, 1.0, 0.5]], dtype=dtype)
    bias = np.array([0.5, -1.0, 2.0], dtype=dtype)
    dy = np.array([[1.0, 0.0, 2.0], [0.0, -1.0, 1.0], [3.0, 1.0, 0.0]], dtype=dtype)

    y = functional.linear_forward(x, weight, bias)
    dx, dweight, dbias = functional.linear_backward(x, weight, dy)

    np.testing.assert_array_equal(y, [[5.5, 1.0, 2.0], [1.5, -2.0, -1.5], [1.5, -0.5, 2.25]])
    np.testing.assert_array_equal(dx, [[-1.0, 3.0], [-1.0, -0.5], [3.0, 7.0]])
    np.testing.assert_array_equal(dweight, [[1.0, -3.0, 5.0], [3.5, 1.5, 3.0]])
    np.testing.assert_array_equal(dbias, [4.0, 0.0, 3.0])


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_linear_propagates_nan(dtype):
    x = np.array([[np.nan, 1.0], [1.0, 2.0]], dtype=dtype)
    weight = np.ones((2, 3), dtype=dtype)
    dy = np.ones((2, 3), dtype=dtype)

    y = functional.linear_forward(x, weight, np.zeros(3, dtype=dtype))
    dx, dweight, dbias = functional.linear_backward(x, weight, dy)

    assert np.isnan(y[0]).all()
    assert np.isfinite(y[1]).all()
    assert np.isfinite(dx).all()
    assert np.isnan(dweight[0]).all()
    assert np.isfinite(dweight[1]).all()
    assert np.isfinite(dbias).all()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_linear_accepts_any_layout(rng, layout, dtype):
    x, weight, bias, dy = linear_inputs(rng, (6, 4, 3), dtype)
    inputs = [with_layout(array, layout) for array in (x, weight, bias, dy)]
    copies = [array.copy() for array in inputs]

    y = functional.linear_forward(inputs[0], inputs[1], inputs[2])
    gradients = functional.linear_backward(inputs[0], inputs[1], inputs[3])

    np.testing.assert_array_equal(y, functional.linear_forward(x, weight, bias))
    for actual, expected in zip(gradients, functional.linear_backward(x, weight, dy)):
        assert actual.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(actual, expected)
    for array, copy in zip(inputs, copies):
        np.testing.assert_array_equal(array, copy)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_linear_leaves_inputs_unchanged(rng, dtype):
    x, weight, bias, dy = linear_inputs(rng, (5, 3, 4), dtype)
    copies = [array.copy() for array in (x, weight, bias, dy)]

    functional.linear_forward(x, weight, bias)
    functional.linear_backward(x, weight, dy)

    for array, copy in zip((x, weight, bias, dy), copies):
        np.testing.assert_array_equal(array, copy)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_linear_out_is_written_and_returned(rng, dtype):
    x, weight, bias, _ = linear_inputs(rng, (5, 3, 4), dtype)
    out = np.full((5, 4), np.nan, dtype=dtype)

    y = functional.linear_forward(x, weight, bias, out=out)

    assert y is out
    assert np.shares_memory(y, out)
    assert_parity(out, reference.linear_forward(x, weight, bias), dtype)


# ---------------------------------------------------------------------------
# Dtype conversion
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "input_dtype, result_dtype",
    [
        (np.float16, np.float32),
        (np.int8, np.float64),
        (np.int64, np.float64),
        (np.uint16, np.float64),
        (np.bool_, np.float64),
        (np.longdouble, np.float64),
    ],
    ids=dtype_id,
)
def test_other_dtypes_are_converted(rng, input_dtype, result_dtype):
    values = rng.integers(0, 2, size=(4, 3))
    x = values.astype(input_dtype)
    weight = values.T.astype(input_dtype)
    expected = values.astype(result_dtype)

    y = functional.linear_forward(x, weight)
    p = functional.softmax(x)
    loss, dz = functional.softmax_cross_entropy(x, np.array([0, 1, 2, 0]))

    assert y.dtype == result_dtype
    assert p.dtype == result_dtype
    assert dz.dtype == result_dtype
    assert_parity(y, reference.linear_forward(expected, expected.T), result_dtype)
    assert_parity(p, reference.softmax(expected), result_dtype)
    np.testing.assert_allclose(
        loss, reference.softmax_cross_entropy(expected, np.array([0, 1, 2, 0]))[0], rtol=1e-6
    )


def test_mixed_float_inputs_promote(rng):
    x = rng.standard_normal((3, 2)).astype(np.float32)
    weight = rng.standard_normal((2, 4))
    z = rng.standard_normal((3, 4)).astype(np.float16)
    targets = rng.random((3, 4)).astype(np.float32)

    y = functional.linear_forward(x, weight)
    loss, dz = functional.softmax_cross_entropy(z, targets)

    assert y.dtype == np.float64
    assert dz.dtype == np.float32
    assert_parity(y, reference.linear_forward(x.astype(np.float64), weight), np.float64)


@pytest.mark.parametrize(
    "bad_dtype", [np.complex128, object, "U3", "S3", "datetime64[s]"], ids=str
)
def test_unsupported_dtype_raises_type_error(bad_dtype):
    good = np.ones((2, 2))
    bad = np.ones((2, 2)).astype(bad_dtype) if bad_dtype not in ("U3", "S3") else np.full(
        (2, 2), "1", dtype=bad_dtype
    )

    with pytest.raises(TypeError, match="x has unsupported dtype"):
        functional.linear_forward(bad, good)
    with pytest.raises(TypeError, match="weight has unsupported dtype"):
        functional.linear_forward(good, bad)
    with pytest.raises(TypeError, match="bias has unsupported dtype"):
        functional.linear_forward(good, good, bad[0])
    with pytest.raises(TypeError, match="dy has unsupported dtype"):
        functional.linear_backward(good, good, bad)
    with pytest.raises(TypeError, match="z has unsupported dtype"):
        functional.softmax(bad)
    with pytest.raises(TypeError, match="z has unsupported dtype"):
        functional.softmax_cross_entropy(bad, np.array([0, 1]))
    with pytest.raises(TypeError, match="targets"):
        functional.softmax_cross_entropy(good, bad)


# ---------------------------------------------------------------------------
# Element-wise activations
# ---------------------------------------------------------------------------


def activation_input(rng, shape, dtype):
    x = 3 * rng.standard_normal(shape)
    flat = x.reshape(-1)
    count = min(flat.size, len(SPECIAL_VALUES))
    flat[:count] = SPECIAL_VALUES[:count]
    return x.astype(dtype)


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES + [(3, 5)], ids=shape_id)
def test_activation_forward_matches_reference(activations, rng, name, dtype, shape):
    compiled, oracle = forward_of(name)
    x = activation_input(rng, shape, dtype)

    y = compiled(x)

    assert_parity(y, oracle(x), dtype)


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES, ids=shape_id)
def test_activation_backward_matches_reference(activations, rng, name, dtype, shape):
    compiled, oracle = backward_of(name)
    y = forward_of(name)[1](activation_input(rng, shape, dtype))
    dy = rng.standard_normal(shape).astype(dtype)

    dx = compiled(y, dy)

    assert_parity(dx, oracle(y, dy), dtype)


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_activation_backward_nan_and_inf(activations, name, dtype):
    y = np.array([np.nan, 0.5, np.nan, 0.0, -0.0, 0.5, 0.0, 1.0], dtype=dtype)
    dy = np.array([1.0, np.nan, np.nan, np.inf, np.nan, np.inf, -np.inf, 2.0], dtype=dtype)
    if name == "relu":
        y = np.where(y == 0.5, 2.0, y).astype(dtype)

    dx = backward_of(name)[0](y, dy)

    assert_parity(dx, backward_of(name)[1](y, dy), dtype)
    assert np.isnan(dx[:3]).all()
    if name == "relu":
        # dy * 0 is NaN for infinite or NaN dy.
        assert np.isnan(dx[3:5]).all()
        assert dx[5] == np.inf
        assert np.isnan(dx[6])
        assert dx[7] == 2.0


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_activation_special_values(activations, dtype):
    x = np.array([-np.inf, np.inf, np.nan, 0.0, -1e4, 1e4], dtype=dtype)

    sigmoid = functional.sigmoid_forward(x)
    tanh = functional.tanh_forward(x)
    relu = functional.relu_forward(x)

    np.testing.assert_array_equal(sigmoid, np.array([0.0, 1.0, np.nan, 0.5, 0.0, 1.0], dtype=dtype))
    np.testing.assert_array_equal(tanh, np.array([-1.0, 1.0, np.nan, 0.0, -1.0, 1.0], dtype=dtype))
    np.testing.assert_array_equal(relu, np.array([0.0, np.inf, np.nan, 0.0, 0.0, 1e4], dtype=dtype))


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_activation_accepts_any_layout(activations, rng, name, layout, dtype):
    x = activation_input(rng, (4, 6), dtype)
    dy = rng.standard_normal((4, 6)).astype(dtype)
    y = forward_of(name)[0](x)
    inputs = [with_layout(array, layout) for array in (x, y, dy)]
    copies = [array.copy() for array in inputs]

    forward = forward_of(name)[0](inputs[0])
    backward = backward_of(name)[0](inputs[1], inputs[2])

    np.testing.assert_array_equal(forward, y)
    np.testing.assert_array_equal(backward, backward_of(name)[0](y, dy))
    for array, copy in zip(inputs, copies):
        np.testing.assert_array_equal(array, copy)


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("input_dtype, result_dtype",
                         [(np.float16, np.float32), (np.int32, np.float64), (np.bool_, np.float64)],
                         ids=dtype_id)
def test_activation_converts_dtype(activations, name, input_dtype, result_dtype):
    x = np.array([[-2, 0, 1], [3, 1, 0]]).astype(input_dtype)

    y = forward_of(name)[0](x)
    dx = backward_of(name)[0](x, x)

    assert y.dtype == result_dtype
    assert dx.dtype == result_dtype
    assert_parity(y, forward_of(name)[1](x.astype(result_dtype)), result_dtype)


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_activation_out_is_written_and_returned(activations, rng, name, dtype):
    x = activation_input(rng, (3, 4), dtype)
    dy = rng.standard_normal((3, 4)).astype(dtype)
    y_out = np.empty((3, 4), dtype=dtype)
    dx_out = np.empty((3, 4), dtype=dtype)

    y = forward_of(name)[0](x, out=y_out)
    dx = backward_of(name)[0](y, dy, out=dx_out)

    assert y is y_out
    assert dx is dx_out
    assert np.shares_memory(y, y_out)
    assert_parity(y_out, forward_of(name)[1](x), dtype)
    assert_parity(dx_out, backward_of(name)[1](y, dy), dtype)


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_activation_in_place(activations, rng, name, dtype):
    x = activation_input(rng, (3, 4), dtype)
    dy = rng.standard_normal((3, 4)).astype(dtype)
    expected_y = forward_of(name)[0](x)
    expected_dx = backward_of(name)[0](expected_y, dy)
    y = x.copy()
    dy_buffer = dy.copy()

    forward_result = forward_of(name)[0](y, out=y)
    backward_into_y = backward_of(name)[0](y, dy, out=y.copy())
    backward_into_dy = backward_of(name)[0](expected_y, dy_buffer, out=dy_buffer)

    assert forward_result is y
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(backward_into_y, expected_dx)
    assert backward_into_dy is dy_buffer
    np.testing.assert_array_equal(dy_buffer, expected_dx)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_backward_in_place_over_y(activations, rng, name):
    y = forward_of(name)[0](rng.standard_normal(10))
    dy = rng.standard_normal(10)
    expected = backward_of(name)[0](y, dy)

    result = backward_of(name)[0](y, dy, out=y)

    assert result is y
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_rejects_partial_overlap(activations, name):
    buffer = np.linspace(-1, 1, 12)

    with pytest.raises(ValueError, match="out overlaps x"):
        forward_of(name)[0](buffer[:10], out=buffer[2:])
    with pytest.raises(ValueError, match="out overlaps dy"):
        backward_of(name)[0](np.ones(10), buffer[:10], out=buffer[2:])


# ---------------------------------------------------------------------------
# Softmax and log-softmax
# ---------------------------------------------------------------------------


# Rows with huge gaps, -inf entries, and rows that are NaN by definition.
EXTREME_LOGITS = [
    [1e8, 0.0, -1e8, 1.0],
    [0.0, -1e3, -2e3, -1e3],
    [1e30, 1e30, 1e30, -1e30],
    [-np.inf, 0.0, 1.0, -np.inf],
    [-np.inf, -np.inf, -np.inf, -np.inf],
    [np.nan, 0.0, 1.0, 2.0],
    [np.inf, 0.0, 1.0, 2.0],
    [np.inf, -np.inf, 0.0, 1.0],
    [-50.0, 50.0, 0.0, 3.0],
]


@pytest.mark.parametrize("function", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", LOGIT_SHAPES + [(4, 0), (0, 0)], ids=shape_id)
def test_softmax_matches_reference(rng, function, dtype, shape):
    z = (5 * rng.standard_normal(shape)).astype(dtype)

    result = getattr(functional, function)(z)

    assert_parity(result, getattr(reference, function)(z), dtype)


@pytest.mark.parametrize("function", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_softmax_extreme_logits(function, dtype):
    z = np.array(EXTREME_LOGITS, dtype=dtype)

    result = getattr(functional, function)(z)

    assert_parity(result, getattr(reference, function)(z), dtype)
    assert np.isfinite(result[:2]).all()
    assert np.isnan(result[4:8]).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_softmax_hand_computed(dtype):
    z = np.array([[0.0, np.log(3.0)], [-np.inf, 5.0]], dtype=dtype)

    p = functional.softmax(z)
    log_p = functional.log_softmax(z)

    np.testing.assert_allclose(p, [[0.25, 0.75], [0.0, 1.0]], **PARITY_TOLERANCE[dtype])
    np.testing.assert_allclose(
        log_p, [[np.log(0.25), np.log(0.75)], [-np.inf, 0.0]], **PARITY_TOLERANCE[dtype]
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_softmax_rows_sum_to_one(rng, dtype):
    z = (10 * rng.standard_normal((50, 300))).astype(dtype)

    p = functional.softmax(z)

    np.testing.assert_allclose(p.sum(axis=1), np.ones(50), rtol=1e-5 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("function", ["softmax", "log_softmax"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_softmax_accepts_any_layout(rng, function, layout, dtype):
    z = rng.standard_normal((5, 7)).astype(dtype)
    variant = with_layout(z, layout)
    copy = variant.copy()

    result = getattr(functional, function)(variant)

    np.testing.assert_array_equal(result, getattr(functional, function)(z))
    np.testing.assert_array_equal(variant, copy)


@pytest.mark.parametrize("function", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_softmax_out_and_in_place(rng, function, dtype):
    z = np.array(EXTREME_LOGITS + [[0.5, -0.5, 2.0, 1.0]], dtype=dtype)
    compute = getattr(functional, function)
    expected = compute(z)
    out = np.empty_like(z)
    in_place = z.copy()

    result = compute(z, out=out)
    in_place_result = compute(in_place, out=in_place)

    assert result is out
    assert np.shares_memory(result, out)
    np.testing.assert_array_equal(out, expected)
    assert in_place_result is in_place
    np.testing.assert_array_equal(in_place, expected)


@pytest.mark.parametrize("function", ["softmax", "log_softmax"])
def test_softmax_rejects_partial_overlap(function):
    buffer = np.zeros((4, 3))

    with pytest.raises(ValueError, match="out overlaps z"):
        getattr(functional, function)(buffer[:3], out=buffer[1:])


# ---------------------------------------------------------------------------
# Cross-entropy
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", LOGIT_SHAPES, ids=shape_id)
def test_cross_entropy_class_indices_match_reference(rng, reduction, dtype, shape):
    z = (3 * rng.standard_normal(shape)).astype(dtype)
    labels = rng.integers(0, shape[1], size=shape[0])

    loss, dz = functional.softmax_cross_entropy(z, labels, reduction=reduction)
    expected_loss, expected_dz = reference.softmax_cross_entropy(z, labels, reduction=reduction)

    assert_loss_parity(loss, expected_loss, dtype)
    assert_parity(dz, expected_dz, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", LOGIT_SHAPES + [(3, 0)], ids=shape_id)
def test_cross_entropy_probabilities_match_reference(rng, reduction, dtype, shape):
    z = (3 * rng.standard_normal(shape)).astype(dtype)
    targets = random_probabilities(rng, shape, dtype)

    loss, dz = functional.softmax_cross_entropy(z, targets, reduction=reduction)
    expected_loss, expected_dz = reference.softmax_cross_entropy(z, targets, reduction=reduction)

    assert_loss_parity(loss, expected_loss, dtype)
    assert_parity(dz, expected_dz, dtype)


@pytest.mark.parametrize("label_dtype", INTEGER_DTYPES, ids=lambda dtype: f"{dtype.char}-{dtype.name}")
def test_cross_entropy_every_integer_label_dtype(rng, label_dtype):
    z = rng.standard_normal((5, 4))
    labels = np.array([3, 0, 1, 2, 1])

    loss, dz = functional.softmax_cross_entropy(z, labels.astype(label_dtype))
    expected_loss, expected_dz = reference.softmax_cross_entropy(z, labels)

    assert_loss_parity(loss, expected_loss, np.float64)
    assert_parity(dz, expected_dz, np.float64)


@pytest.mark.parametrize("layout", ["strided", "readonly", "byteswapped"])
def test_cross_entropy_label_layouts(rng, layout):
    z = rng.standard_normal((5, 4))
    labels = np.array([3, 0, 1, 2, 1], dtype=np.int32)
    variant = with_layout(labels, layout)

    loss, dz = functional.softmax_cross_entropy(z, variant)
    expected_loss, expected_dz = functional.softmax_cross_entropy(z, labels)

    assert loss == expected_loss
    np.testing.assert_array_equal(dz, expected_dz)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_cross_entropy_accepts_any_layout(rng, layout, dtype):
    z = rng.standard_normal((5, 4)).astype(dtype)
    targets = random_probabilities(rng, (5, 4), dtype)
    z_variant = with_layout(z, layout)
    targets_variant = with_layout(targets, layout)
    copies = [z_variant.copy(), targets_variant.copy()]

    loss, dz = functional.softmax_cross_entropy(z_variant, targets_variant, reduction="none")
    expected_loss, expected_dz = functional.softmax_cross_entropy(z, targets, reduction="none")

    np.testing.assert_array_equal(loss, expected_loss)
    np.testing.assert_array_equal(dz, expected_dz)
    np.testing.assert_array_equal(z_variant, copies[0])
    np.testing.assert_array_equal(targets_variant, copies[1])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_cross_entropy_extreme_logits_class_indices(reduction, dtype):
    z = np.array(EXTREME_LOGITS, dtype=dtype)
    # Row 3 picks a finite class next to masked -inf classes.
    labels = np.array([2, 1, 0, 2, 0, 1, 1, 3, 0])

    loss, dz = functional.softmax_cross_entropy(z, labels, reduction="none")
    expected_loss, expected_dz = reference.softmax_cross_entropy(z, labels, reduction="none")

    assert_parity(loss, expected_loss, dtype)
    assert_parity(dz, expected_dz, dtype)
    assert np.isfinite(loss[[0, 1, 3, 8]]).all()
    assert np.isnan(loss[4:8]).all()
    assert np.isnan(dz[4:8]).all()
    assert dz[3, 0] == 0.0


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_cross_entropy_masked_classes_with_zero_targets(dtype):
    z = np.array([[-np.inf, 0.0, np.log(3.0)], [-np.inf, -np.inf, 1.0]], dtype=dtype)
    targets = np.array([[0.0, 0.5, 0.5], [0.0, 0.0, 1.0]], dtype=dtype)

    loss, dz = functional.softmax_cross_entropy(z, targets, reduction="none")

    # Row 0: p = (0, 1/4, 3/4), loss = -0.5 log(1/4) - 0.5 log(3/4).
    expected_loss = [-0.5 * np.log(0.25) - 0.5 * np.log(0.75), 0.0]
    np.testing.assert_allclose(loss, expected_loss, **PARITY_TOLERANCE[dtype])
    np.testing.assert_allclose(dz, [[0.0, -0.25, 0.25], [0.0, 0.0, 0.0]], **PARITY_TOLERANCE[dtype])
    assert_parity(loss, reference.softmax_cross_entropy(z, targets, reduction="none")[0], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_cross_entropy_nan_row_has_nan_loss(dtype):
    z = np.array([[np.nan, 0.0, 1.0], [np.nan, 0.0, 1.0], [0.0, 1.0, 2.0]], dtype=dtype)
    targets = np.array([[0.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.2, 0.3, 0.5]], dtype=dtype)

    loss, dz = functional.softmax_cross_entropy(z, targets, reduction="none")
    label_loss, label_dz = functional.softmax_cross_entropy(z, np.array([1, 1, 1]), reduction="none")

    assert np.isnan(loss[0])
    assert np.isnan(loss[1])
    assert np.isfinite(loss[2])
    assert np.isnan(dz[:2]).all()
    assert np.isfinite(dz[2]).all()
    assert np.isnan(label_loss[:2]).all()
    assert np.isnan(label_dz[:2]).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_cross_entropy_hand_computed(dtype):
    z = np.array([[0.0, np.log(3.0)], [2.0, 2.0]], dtype=dtype)
    labels = np.array([1, 0])

    mean_loss, mean_dz = functional.softmax_cross_entropy(z, labels)
    sum_loss, sum_dz = functional.softmax_cross_entropy(z, labels, reduction="sum")
    row_losses, none_dz = functional.softmax_cross_entropy(z, labels, reduction="none")

    expected_rows = np.array([-np.log(0.75), np.log(2.0)])
    expected_dz = np.array([[0.25, -0.25], [-0.5, 0.5]])
    tolerance = PARITY_TOLERANCE[dtype]
    assert isinstance(mean_loss, float)
    assert isinstance(sum_loss, float)
    assert row_losses.dtype == np.dtype(dtype)
    np.testing.assert_allclose(mean_loss, expected_rows.mean(), **tolerance)
    np.testing.assert_allclose(sum_loss, expected_rows.sum(), **tolerance)
    np.testing.assert_allclose(row_losses, expected_rows, **tolerance)
    np.testing.assert_allclose(mean_dz, expected_dz / 2, **tolerance)
    np.testing.assert_allclose(sum_dz, expected_dz, **tolerance)
    np.testing.assert_allclose(none_dz, expected_dz, **tolerance)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_cross_entropy_unnormalized_targets_true_gradient(dtype):
    z = np.array([[0.0, np.log(3.0)]], dtype=dtype)
    targets = np.array([[1.0, 1.0]], dtype=dtype)

    loss, dz = functional.softmax_cross_entropy(z, targets, reduction="sum")

    # p = (1/4, 3/4), sum(t) = 2, so dz = 2 p - t.
    np.testing.assert_allclose(loss, -np.log(0.25) - np.log(0.75), **PARITY_TOLERANCE[dtype])
    np.testing.assert_allclose(dz, [[-0.5, 0.5]], **PARITY_TOLERANCE[dtype])


@pytest.mark.parametrize("targets", ["indices", "probabilities"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_cross_entropy_empty_batch(targets, dtype):
    z = np.empty((0, 3), dtype=dtype)
    target_array = np.empty(0, dtype=np.int64) if targets == "indices" else np.empty((0, 3), dtype)

    mean_loss, mean_dz = functional.softmax_cross_entropy(z, target_array)
    sum_loss, _ = functional.softmax_cross_entropy(z, target_array, reduction="sum")
    row_losses, _ = functional.softmax_cross_entropy(z, target_array, reduction="none")

    assert isinstance(mean_loss, float)
    assert np.isnan(mean_loss)
    assert mean_dz.shape == (0, 3)
    assert mean_dz.dtype == np.dtype(dtype)
    assert sum_loss == 0.0
    assert row_losses.shape == (0,)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_cross_entropy_no_classes_probabilities(dtype):
    z = np.empty((3, 0), dtype=dtype)
    targets = np.empty((3, 0), dtype=dtype)

    row_losses, dz = functional.softmax_cross_entropy(z, targets, reduction="none")
    mean_loss, _ = functional.softmax_cross_entropy(z, targets)

    np.testing.assert_array_equal(row_losses, np.zeros(3, dtype=dtype))
    assert dz.shape == (3, 0)
    assert mean_loss == 0.0


def test_cross_entropy_no_classes_class_indices():
    with pytest.raises(IndexError, match=r"targets\[0\] = 0 .* 0 <= label < 0"):
        functional.softmax_cross_entropy(np.empty((2, 0)), np.array([0, 0]))


def test_cross_entropy_checks_labels_before_any_kernel(monkeypatch):
    def fail(*args):
        raise AssertionError("a kernel ran before the label check")

    monkeypatch.setattr(functional._softmax, "cross_entropy_labels", fail)

    with pytest.raises(IndexError):
        functional.softmax_cross_entropy(np.zeros((3, 2)), np.array([0, 1, 2]))


@pytest.mark.parametrize(
    "label_dtype, bad_value",
    [(np.int8, -1), (np.int64, -(2**63)), (np.uint8, 4), (np.uint64, 2**64 - 1), (np.uint64, 2**63),
     (np.int64, 2**62), (np.uint32, 2**32 - 1)],
    ids=lambda value: str(value) if not isinstance(value, type) else np.dtype(value).name,
)
def test_cross_entropy_out_of_range_label(label_dtype, bad_value):
    z = np.zeros((5, 4))
    labels = np.array([0, 1, 0, 0, 0], dtype=label_dtype)
    labels[2] = bad_value
    labels[4] = bad_value

    with pytest.raises(IndexError, match=rf"targets\[2\] = {bad_value} .* 0 <= label < 4"):
        functional.softmax_cross_entropy(z, labels)


# ---------------------------------------------------------------------------
# Long sums: lane and block boundaries, wide rows and tall batches
# ---------------------------------------------------------------------------

# Row widths around the 16 partial sums of a row sum, the 256-entry exponential
# blocks of log_softmax and the 512-column blocks of the bias gradient.
SUM_WIDTHS = [15, 16, 17, 33, 255, 256, 257, 511, 512, 513, 1100]

# A float32 row of 10**7 random logits against float64 values of the same
# float32 logits. Shifting a float32 logit by the row maximum rounds at 2**-24
# relative to the shifted logit s, which moves exp(s) by about |s| * 2**-24
# relative. |s| stays below 12 for these logits, and the max relative error
# measured on x86-64 with AVX-512 is 6.6e-7.
WIDE_ROW_RTOL = 2e-6
WIDE_ROW_CLASSES = 10**7

# A float32 result within this many units in the last place (np.spacing) of the
# exact value. A float32 running sum of the exponentials of 2**24 + 5 zeros stops
# at 2**24, which moves 1 / C by 5 units.
SATURATION_MAX_ULPS = 2


@pytest.fixture(scope="module")
def wide_row():
    """Return one float32 row of standard normal logits, shape (1, 10**7)."""
    return np.random.default_rng(0).standard_normal((1, WIDE_ROW_CLASSES), dtype=np.float32)


def float64_log_softmax(z):
    """Return log_softmax of each row of z, computed in float64 with NumPy."""
    z = np.asarray(z, dtype=np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def max_relative_error(actual, expected):
    """Return max |actual / expected - 1|, without assert_allclose's copies of 10**7 entries."""
    return np.max(np.abs(actual / expected - 1.0))


def ulps_from(actual, exact):
    """Return |actual - exact| in units of the float32 spacing at exact."""
    return np.abs(np.float64(actual) - exact) / np.spacing(np.float32(exact))


@pytest.mark.parametrize("function", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("n_classes", SUM_WIDTHS, ids=str)
def test_softmax_block_boundaries(rng, function, dtype, n_classes):
    z = (5 * rng.standard_normal((3, n_classes))).astype(dtype)

    result = getattr(functional, function)(z)

    assert_parity(result, getattr(reference, function)(z), dtype)


@pytest.mark.parametrize("targets", ["indices", "probabilities"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("n_classes", SUM_WIDTHS, ids=str)
def test_cross_entropy_block_boundaries(rng, targets, dtype, n_classes):
    z = (3 * rng.standard_normal((3, n_classes))).astype(dtype)
    if targets == "indices":
        target_array = rng.integers(0, n_classes, size=3)
    else:
        target_array = random_probabilities(rng, (3, n_classes), dtype)

    loss, dz = functional.softmax_cross_entropy(z, target_array, reduction="none")
    expected_loss, expected_dz = reference.softmax_cross_entropy(z, target_array, reduction="none")

    assert_parity(loss, expected_loss, dtype)
    assert_parity(dz, expected_dz, dtype)


@pytest.mark.parametrize("position", [0, 15, 16, 39], ids=lambda position: f"at{position}")
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_softmax_special_values_in_lanes(dtype, position):
    # 40 columns: two full sets of 16 partial sums and 8 more in order.
    nan_row = np.linspace(-2.0, 2.0, 40)
    nan_row[position] = np.nan
    masked_row = np.linspace(-2.0, 2.0, 40)
    masked_row[position] = -np.inf
    infinite_row = np.linspace(-2.0, 2.0, 40)
    infinite_row[position] = np.inf
    z = np.array([nan_row, masked_row, infinite_row], dtype=dtype)
    # The target of the special entry is 0, so the -inf row has a finite loss.
    targets = np.zeros((3, 40), dtype=dtype)
    targets[:, (position + 1) % 40] = 1.0

    p = functional.softmax(z)
    log_p = functional.log_softmax(z)
    loss, dz = functional.softmax_cross_entropy(z, targets, reduction="none")

    assert np.isnan(p[0]).all()
    assert np.isnan(log_p[0]).all()
    assert np.isnan(loss[0])
    assert p[1, position] == 0.0
    assert log_p[1, position] == -np.inf
    assert np.isfinite(loss[1])
    assert np.isnan(p[2]).all()
    assert np.isnan(log_p[2]).all()
    assert np.isnan(loss[2])
    assert_parity(p, reference.softmax(z), dtype)
    assert_parity(log_p, reference.log_softmax(z), dtype)
    assert_parity(dz, reference.softmax_cross_entropy(z, targets, reduction="none")[1], dtype)


def test_float32_wide_row_softmax(wide_row):
    p = functional.softmax(wide_row)

    assert p.dtype == np.float32
    assert abs(p.sum(dtype=np.float64) - 1.0) < 1e-5
    assert max_relative_error(p, np.exp(float64_log_softmax(wide_row))) < WIDE_ROW_RTOL


def test_float32_wide_row_log_softmax(wide_row):
    log_p = functional.log_softmax(wide_row)

    assert log_p.dtype == np.float32
    assert max_relative_error(log_p, float64_log_softmax(wide_row)) < WIDE_ROW_RTOL


@pytest.mark.parametrize("targets", ["indices", "probabilities"])
def test_float32_wide_row_cross_entropy(wide_row, targets):
    log_p = float64_log_softmax(wide_row)
    if targets == "indices":
        target_array = np.array([WIDE_ROW_CLASSES // 3])
        expected_loss = -log_p[0, WIDE_ROW_CLASSES // 3]
        expected_dz = np.exp(log_p)
        expected_dz[0, WIDE_ROW_CLASSES // 3] -= 1.0
    else:
        target_array = random_probabilities(np.random.default_rng(1), wide_row.shape, np.float32)
        exact_targets = target_array.astype(np.float64)
        expected_loss = -(exact_targets * log_p).sum()
        expected_dz = np.exp(log_p) * exact_targets.sum() - exact_targets

    loss, dz = functional.softmax_cross_entropy(wide_row, target_array, reduction="sum")

    assert abs(loss / expected_loss - 1.0) < WIDE_ROW_RTOL
    # dz = p sum(t) - t cancels for probability targets, so its error is
    # measured against the largest entry rather than against each entry.
    if targets == "indices":
        assert max_relative_error(dz, expected_dz) < WIDE_ROW_RTOL
    else:
        scale = np.abs(expected_dz).max()
        assert np.abs(dz - expected_dz).max() < WIDE_ROW_RTOL * scale


@pytest.mark.parametrize("n_classes", [2**24 + 5, 3 * 2**23], ids=["2^24+5", "3x2^23"])
def test_float32_constant_row_beyond_2_24(n_classes):
    z = np.zeros((1, n_classes), dtype=np.float32)
    label = n_classes - 1

    p = functional.softmax(z)
    loss, dz = functional.softmax_cross_entropy(z, np.array([label]), reduction="sum")

    assert ulps_from(loss, np.log(n_classes)) <= 1
    assert ulps_from(p[0, 0], 1.0 / n_classes) <= SATURATION_MAX_ULPS
    assert ulps_from(p[0, label], 1.0 / n_classes) <= SATURATION_MAX_ULPS
    assert ulps_from(dz[0, 0], 1.0 / n_classes) <= SATURATION_MAX_ULPS
    assert ulps_from(dz[0, label], 1.0 / n_classes - 1.0) <= SATURATION_MAX_ULPS


def test_float32_tall_batch_bias_gradient():
    n_rows = 2**22
    noise = np.random.default_rng(2).standard_normal((n_rows, 2))
    dy = (1.0 + 1e-3 * noise).astype(np.float32)
    x = np.zeros((n_rows, 1), dtype=np.float32)
    weight = np.ones((1, 2), dtype=np.float32)

    _, _, dbias = functional.linear_backward(x, weight, dy, need_dx=False)

    # Within one float32 unit in the last place: the error comes from the final
    # rounding to float32, not from one rounding per row.
    exact = dy.sum(axis=0, dtype=np.float64)
    assert dbias.dtype == np.float32
    np.testing.assert_allclose(dbias, exact, rtol=2.0**-23, atol=0)


# Batches below, at and above the four rows that one pass of the float32 column
# sum adds.
@pytest.mark.parametrize("n_rows", [0, 1, 3, 4, 9], ids=lambda n_rows: f"B{n_rows}")
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("n_outputs", SUM_WIDTHS, ids=str)
def test_bias_gradient_column_blocks(rng, dtype, n_rows, n_outputs):
    x, weight, _, dy = linear_inputs(rng, (n_rows, 2, n_outputs), dtype)

    _, _, dbias = functional.linear_backward(x, weight, dy, need_dx=False)

    assert_parity(dbias, reference.linear_backward(x, weight, dy)[2], dtype)
    assert_parity(dbias, dy.sum(axis=0, dtype=np.float64).astype(dtype), dtype)


# ---------------------------------------------------------------------------
# Gradients: float64 finite differences and float32 against float64
# ---------------------------------------------------------------------------


def test_linear_gradients_finite_differences(rng):
    x, weight, bias, dy = linear_inputs(rng, (4, 3, 5), np.float64)

    def loss_of(x_value, weight_value, bias_value):
        return float((functional.linear_forward(x_value, weight_value, bias_value) * dy).sum())

    dx, dweight, dbias = functional.linear_backward(x, weight, dy)

    np.testing.assert_allclose(
        dx, central_differences(lambda value: loss_of(value, weight, bias), x),
        **FINITE_DIFFERENCE_TOLERANCE,
    )
    np.testing.assert_allclose(
        dweight, central_differences(lambda value: loss_of(x, value, bias), weight),
        **FINITE_DIFFERENCE_TOLERANCE,
    )
    np.testing.assert_allclose(
        dbias, central_differences(lambda value: loss_of(x, weight, value), bias),
        **FINITE_DIFFERENCE_TOLERANCE,
    )


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_gradients_finite_differences(activations, rng, name):
    forward, _ = forward_of(name)
    backward, _ = backward_of(name)
    x = rng.uniform(-3, 3, size=(3, 4))
    # Keep ReLU's inputs away from its kink at 0.
    x[np.abs(x) < 0.1] = 0.5
    dy = rng.standard_normal((3, 4))

    dx = backward(forward(x), dy)

    expected = central_differences(lambda value: float((forward(value) * dy).sum()), x)
    np.testing.assert_allclose(dx, expected, **FINITE_DIFFERENCE_TOLERANCE)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("targets", ["indices", "probabilities"])
def test_cross_entropy_gradient_finite_differences(rng, reduction, targets):
    z = 2 * rng.standard_normal((4, 5))
    if targets == "indices":
        target_array = np.array([4, 0, 2, 2])
    else:
        target_array = random_probabilities(rng, (4, 5), np.float64)

    def loss_of(value):
        loss, _ = functional.softmax_cross_entropy(value, target_array, reduction=reduction)
        return float(np.sum(loss))

    _, dz = functional.softmax_cross_entropy(z, target_array, reduction=reduction)

    np.testing.assert_allclose(dz, central_differences(loss_of, z), **FINITE_DIFFERENCE_TOLERANCE)


def test_softmax_jacobian_finite_differences(rng):
    z = rng.standard_normal((3, 4))
    weights = rng.standard_normal((3, 4))
    p = functional.softmax(z)

    # d sum(w * p)/dz = p * (w - sum(w * p)) row by row.
    analytic = p * (weights - (weights * p).sum(axis=1, keepdims=True))

    expected = central_differences(lambda value: float((functional.softmax(value) * weights).sum()), z)
    np.testing.assert_allclose(analytic, expected, **FINITE_DIFFERENCE_TOLERANCE)


def test_float32_linear_gradients_match_float64(rng):
    x, weight, _, dy = linear_inputs(rng, (16, 9, 7), np.float32)

    single = functional.linear_backward(x, weight, dy)
    double = functional.linear_backward(*(array.astype(np.float64) for array in (x, weight, dy)))

    for actual, expected in zip(single, double):
        assert actual.dtype == np.float32
        np.testing.assert_allclose(actual, expected, **FLOAT32_GRADIENT_TOLERANCE)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_float32_activation_gradients_match_float64(activations, rng, name):
    x = rng.uniform(-4, 4, size=50)
    dy = rng.standard_normal(50)
    forward, _ = forward_of(name)
    backward, _ = backward_of(name)

    single = backward(forward(x.astype(np.float32)), dy.astype(np.float32))
    double = backward(forward(x), dy)

    assert single.dtype == np.float32
    np.testing.assert_allclose(single, double, **FLOAT32_GRADIENT_TOLERANCE)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("targets", ["indices", "probabilities"])
def test_float32_cross_entropy_gradient_matches_float64(rng, reduction, targets):
    z = 3 * rng.standard_normal((8, 6))
    if targets == "indices":
        target_array = rng.integers(0, 6, size=8)
        target_single = target_array
    else:
        target_array = random_probabilities(rng, (8, 6), np.float64)
        target_single = target_array.astype(np.float32)

    loss_single, dz_single = functional.softmax_cross_entropy(
        z.astype(np.float32), target_single, reduction=reduction
    )
    loss_double, dz_double = functional.softmax_cross_entropy(z, target_array, reduction=reduction)

    assert dz_single.dtype == np.float32
    np.testing.assert_allclose(dz_single, dz_double, **FLOAT32_GRADIENT_TOLERANCE)
    np.testing.assert_allclose(loss_single, loss_double, **FLOAT32_GRADIENT_TOLERANCE)


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------


def matrix(*shape):
    return np.ones(shape)


BAD_CALLS = [
    ("linear_x_1d", lambda: functional.linear_forward(np.ones(3), matrix(3, 2)),
     ValueError, r"x must be a 2-D array .* got shape \(3,\)"),
    ("linear_weight_3d", lambda: functional.linear_forward(matrix(2, 3), np.ones((3, 2, 1))),
     ValueError, r"weight must be a 2-D array .* got shape \(3, 2, 1\)"),
    ("linear_inner_mismatch", lambda: functional.linear_forward(matrix(2, 3), matrix(4, 2)),
     ValueError, r"x has shape \(2, 3\) and weight has shape \(4, 2\)"),
    ("linear_bias_length", lambda: functional.linear_forward(matrix(2, 3), matrix(3, 2), np.ones(3)),
     ValueError, r"bias must have shape .* \(2,\) .* got shape \(3,\)"),
    ("linear_bias_2d", lambda: functional.linear_forward(matrix(2, 3), matrix(3, 2), matrix(1, 2)),
     ValueError, r"bias must have shape .* got shape \(1, 2\)"),
    ("linear_backward_dy_shape", lambda: functional.linear_backward(matrix(2, 3), matrix(3, 4), matrix(2, 5)),
     ValueError, r"dy must have shape .* \(2, 4\) .* got shape \(2, 5\)"),
    ("linear_backward_dy_1d", lambda: functional.linear_backward(matrix(2, 3), matrix(3, 4), np.ones(4)),
     ValueError, r"dy must be a 2-D array"),
    ("linear_backward_x_1d", lambda: functional.linear_backward(np.ones(3), matrix(3, 4), matrix(1, 4)),
     ValueError, r"x must be a 2-D array"),
    ("linear_batch_above_blas_limit",
     lambda: functional.linear_forward(np.empty((2**31, 0)), np.empty((0, 2))),
     ValueError, r"x has shape \(2147483648, 0\).* 2147483647"),
    ("linear_outputs_above_blas_limit",
     lambda: functional.linear_forward(np.empty((3, 0)), np.empty((0, 2**31))),
     ValueError, r"weight has shape \(0, 2147483648\)"),
    ("linear_backward_above_blas_limit",
     lambda: functional.linear_backward(
         np.empty((2**31, 0)), np.empty((0, 1)), np.broadcast_to(np.zeros(1), (2**31, 1))),
     ValueError, r"x has shape \(2147483648, 0\)"),
    ("backward_shape_mismatch", lambda: functional.sigmoid_backward(np.ones(3), np.ones(4)),
     ValueError, r"y and dy must have the same shape, got y.shape = \(3,\) and dy.shape = \(4,\)"),
    ("softmax_z_1d", lambda: functional.softmax(np.ones(3)),
     ValueError, r"z must be a 2-D array of shape \(B, C\), got shape \(3,\)"),
    ("log_softmax_z_3d", lambda: functional.log_softmax(np.ones((2, 2, 2))),
     ValueError, r"z must be a 2-D array"),
    ("cross_entropy_z_1d", lambda: functional.softmax_cross_entropy(np.ones(3), np.array([0])),
     ValueError, r"z must be a 2-D array"),
    ("cross_entropy_reduction", lambda: functional.softmax_cross_entropy(matrix(2, 3), np.array([0, 1]), reduction="avg"),
     ValueError, r"reduction must be one of .* got 'avg'"),
    ("cross_entropy_reduction_none_object", lambda: functional.softmax_cross_entropy(matrix(2, 3), np.array([0, 1]), reduction=None),
     ValueError, r"reduction must be one of .* got None"),
    ("cross_entropy_bool_targets", lambda: functional.softmax_cross_entropy(matrix(2, 3), np.array([True, False])),
     TypeError, r"targets has dtype bool"),
    ("cross_entropy_float_labels", lambda: functional.softmax_cross_entropy(matrix(2, 3), np.array([0.0, 1.0])),
     TypeError, r"targets is a 1-D array of dtype float64"),
    ("cross_entropy_complex_targets", lambda: functional.softmax_cross_entropy(matrix(2, 3), np.ones((2, 3), complex)),
     TypeError, r"targets has unsupported dtype complex128"),
    ("cross_entropy_string_targets", lambda: functional.softmax_cross_entropy(matrix(2, 3), np.array(["a", "b"])),
     TypeError, r"targets has unsupported dtype"),
    ("cross_entropy_labels_2d", lambda: functional.softmax_cross_entropy(matrix(2, 3), np.zeros((2, 1), int)),
     ValueError, r"class-index targets must be a 1-D array .* got shape \(2, 1\)"),
    ("cross_entropy_labels_scalar", lambda: functional.softmax_cross_entropy(matrix(2, 3), np.int64(1)),
     ValueError, r"class-index targets must be a 1-D array .* got shape \(\)"),
    ("cross_entropy_labels_length", lambda: functional.softmax_cross_entropy(matrix(2, 3), np.array([0, 1, 2])),
     ValueError, r"targets has 3 class indices but z has 2 rows"),
    ("cross_entropy_probability_shape", lambda: functional.softmax_cross_entropy(matrix(2, 3), matrix(2, 4)),
     ValueError, r"targets.shape = \(2, 4\) and z.shape = \(2, 3\)"),
    ("cross_entropy_label_negative", lambda: functional.softmax_cross_entropy(matrix(3, 3), np.array([0, -1, 5])),
     IndexError, r"targets\[1\] = -1 is not a valid class index for z of shape \(3, 3\): expected 0 <= label < 3"),
    ("cross_entropy_label_too_large", lambda: functional.softmax_cross_entropy(matrix(3, 3), np.array([0, 2, 3])),
     IndexError, r"targets\[2\] = 3 .* 0 <= label < 3"),
]


@pytest.mark.parametrize(
    "call, exception, message", [case[1:] for case in BAD_CALLS], ids=[case[0] for case in BAD_CALLS]
)
def test_bad_input_raises(call, exception, message):
    with pytest.raises(exception, match=message):
        call()


def elementwise_calls(activations_module):
    """(id, function taking out=) pairs for every function that has an out= argument."""
    calls = [
        ("linear_forward", lambda out: functional.linear_forward(matrix(2, 3), matrix(3, 4), out=out)),
        ("softmax", lambda out: functional.softmax(matrix(2, 4), out=out)),
        ("log_softmax", lambda out: functional.log_softmax(matrix(2, 4), out=out)),
    ]
    if activations_module is not None:
        for name in ACTIVATIONS:
            calls.append((f"{name}_forward",
                          lambda out, name=name: forward_of(name)[0](matrix(2, 4), out=out)))
            calls.append((f"{name}_backward",
                          lambda out, name=name: backward_of(name)[0](matrix(2, 4), matrix(2, 4), out=out)))
    return calls


BAD_OUTS = [
    ("wrong_shape", lambda: np.empty((4, 2)), ValueError, r"out has shape \(4, 2\), expected the result shape \(2, 4\)"),
    ("wrong_dtype", lambda: np.empty((2, 4), np.float32), ValueError, r"out has dtype float32, expected the result dtype float64"),
    ("fortran_order", lambda: np.empty((2, 4), order="F"), ValueError, r"out with strides .* is not C-contiguous"),
    ("strided", lambda: np.empty((2, 8))[:, ::2], ValueError, r"is not C-contiguous"),
    ("read_only", lambda: np.lib.stride_tricks.as_strided(np.empty((2, 4)), writeable=False), ValueError, r"out is read-only"),
    ("list", lambda: [[0.0] * 4] * 2, TypeError, r"out must be a numpy.ndarray or None, got list"),
]


@pytest.mark.parametrize("bad_out", BAD_OUTS, ids=[case[0] for case in BAD_OUTS])
def test_bad_out_raises(bad_out):
    try:
        import nnback._activations as activations_module
    except ImportError:
        activations_module = None
    _, make_out, exception, message = bad_out

    for _name, call in elementwise_calls(activations_module):
        with pytest.raises(exception, match=message):
            call(make_out())


def test_linear_out_overlapping_an_input_raises():
    x = np.eye(3)
    weight = np.eye(3)
    bias_holder = np.zeros((3, 3))

    with pytest.raises(ValueError, match="out overlaps x"):
        functional.linear_forward(x, weight, out=x)
    with pytest.raises(ValueError, match="out overlaps weight"):
        functional.linear_forward(x, weight, out=weight)
    with pytest.raises(ValueError, match="out overlaps bias"):
        functional.linear_forward(x, weight, bias_holder[1], out=bias_holder)


def test_bad_input_leaves_out_untouched():
    out = np.full((2, 2), 7.0)

    with pytest.raises(IndexError):
        functional.softmax_cross_entropy(matrix(2, 2), np.array([0, 9]))
    with pytest.raises(ValueError):
        functional.linear_forward(matrix(2, 3), matrix(4, 2), out=out)

    np.testing.assert_array_equal(out, np.full((2, 2), 7.0))
