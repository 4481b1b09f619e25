"""Tests of nnback.reference, the pure NumPy oracle.

The reference is checked against float64 central finite differences, against values
computed by hand, and against its own documented rules for NaN, infinities,
zero-size shapes, dtypes and invalid input.
"""

import math
import re
import warnings

import numpy as np
import pytest

from nnback import reference as ref

# Any warning, in particular a NumPy RuntimeWarning from overflow or inf - inf,
# fails the test that triggers it.
pytestmark = pytest.mark.filterwarnings("error")

REDUCTIONS = ["mean", "sum", "none"]
INTEGER_DTYPES = [
    np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
]
SIGNED_DTYPES = [np.int8, np.int16, np.int32, np.int64]

# Tolerances for comparing a result computed in the given dtype with the same
# result computed in float64.
TOLERANCES = {
    np.float32: {"rtol": 1e-5, "atol": 1e-6},
    np.float64: {"rtol": 1e-12, "atol": 1e-13},
}
# Central differences with step 1e-6 in float64 have a truncation error of about
# 1e-12 and a rounding error of about 1e-10 times the size of the loss.
FINITE_DIFFERENCE_TOLERANCE = {"rtol": 1e-6, "atol": 1e-7}
FINITE_DIFFERENCE_STEP = 1e-6


@pytest.fixture
def rng():
    return np.random.default_rng(20240601)


def numerical_gradient(scalar_function, point, step=FINITE_DIFFERENCE_STEP):
    """Estimate the gradient of ``scalar_function`` at ``point`` by central differences."""
    point = np.array(point, dtype=np.float64)
    gradient = np.zeros_like(point)
    for index in np.ndindex(point.shape):
        moved = point.copy()
        moved[index] = point[index] + step
        upper = scalar_function(moved)
        moved[index] = point[index] - step
        lower = scalar_function(moved)
        gradient[index] = (upper - lower) / (2 * step)
    return gradient


def away_from_zero(rng, shape, margin=0.1):
    """Draw values with |value| in [margin, 2], so ReLU's kink at 0 is never crossed."""
    signs = rng.choice([-1.0, 1.0], size=shape)
    return signs * rng.uniform(margin, 2.0, size=shape)


def random_probability_targets(rng, shape):
    """Draw non-negative targets whose rows sum to 1, to less than 1, to more than 1, and to 0."""
    targets = rng.uniform(0.0, 1.0, size=shape)
    targets[0] /= targets[0].sum()
    targets[1] *= 0.3
    targets[2] *= 2.5
    targets[3] = 0.0
    targets[-1, 0] = 0.0
    return targets


def total_loss(loss):
    """Return the scalar that the gradient of softmax_cross_entropy differentiates."""
    return float(np.sum(loss))


# ---------------------------------------------------------------------------
# Gradients against float64 central finite differences
# ---------------------------------------------------------------------------


def test_linear_backward_matches_finite_differences(rng):
    batch, n_features, n_outputs = 3, 5, 4
    x = rng.standard_normal((batch, n_features))
    weight = rng.standard_normal((n_features, n_outputs))
    bias = rng.standard_normal(n_outputs)
    projection = rng.standard_normal((batch, n_outputs))

    def loss_of(x, weight, bias):
        return float(np.sum(projection * ref.linear_forward(x, weight, bias)))

    dx, dweight, dbias = ref.linear_backward(x, weight, projection)

    expected_dx = numerical_gradient(lambda v: loss_of(v, weight, bias), x)
    expected_dweight = numerical_gradient(lambda v: loss_of(x, v, bias), weight)
    expected_dbias = numerical_gradient(lambda v: loss_of(x, weight, v), bias)
    assert dx.shape == (batch, n_features)
    assert dweight.shape == (n_features, n_outputs)
    assert dbias.shape == (n_outputs,)
    np.testing.assert_allclose(dx, expected_dx, **FINITE_DIFFERENCE_TOLERANCE)
    np.testing.assert_allclose(dweight, expected_dweight, **FINITE_DIFFERENCE_TOLERANCE)
    np.testing.assert_allclose(dbias, expected_dbias, **FINITE_DIFFERENCE_TOLERANCE)


ACTIVATIONS = {
    "sigmoid": (ref.sigmoid_forward, ref.sigmoid_backward),
    "tanh": (ref.tanh_forward, ref.tanh_backward),
    "relu": (ref.relu_forward, ref.relu_backward),
}


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 2), (7,)], ids=["2d", "3d", "1d"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_activation_backward_matches_finite_differences(rng, activation, shape):
    forward, backward = ACTIVATIONS[activation]
    # The points stay at least 0.1 away from 0, so the step of 1e-6 never crosses
    # ReLU's kink.
    x = away_from_zero(rng, shape)
    projection = rng.standard_normal(shape)

    dx = backward(forward(x), projection)

    expected = numerical_gradient(lambda v: float(np.sum(projection * forward(v))), x)
    np.testing.assert_allclose(dx, expected, **FINITE_DIFFERENCE_TOLERANCE)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_class_index_gradient(rng, reduction):
    z = rng.standard_normal((5, 4)) * 2
    labels = np.array([0, 3, 1, 3, 2])

    _, dz = ref.softmax_cross_entropy(z, labels, reduction=reduction)

    def loss_of(v):
        loss, _ = ref.softmax_cross_entropy(v, labels, reduction=reduction)
        return total_loss(loss)

    np.testing.assert_allclose(dz, numerical_gradient(loss_of, z), **FINITE_DIFFERENCE_TOLERANCE)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_probability_gradient(rng, reduction):
    z = rng.standard_normal((5, 4)) * 2
    targets = random_probability_targets(rng, z.shape)

    _, dz = ref.softmax_cross_entropy(z, targets, reduction=reduction)

    def loss_of(v):
        loss, _ = ref.softmax_cross_entropy(v, targets, reduction=reduction)
        return total_loss(loss)

    np.testing.assert_allclose(dz, numerical_gradient(loss_of, z), **FINITE_DIFFERENCE_TOLERANCE)


def test_cross_entropy_unnormalized_targets_gradient(rng):
    # For a row whose targets sum to s, the gradient is p * s - t. The shortcut
    # p - t is only right for s == 1, so it must differ here.
    z = rng.standard_normal((2, 3))
    targets = np.array([[0.2, 0.1, 0.3], [1.0, 2.0, 0.5]])
    p = ref.softmax(z)

    _, dz = ref.softmax_cross_entropy(z, targets, reduction="sum")

    expected = p * targets.sum(axis=1, keepdims=True) - targets
    np.testing.assert_allclose(dz, expected, rtol=1e-12, atol=1e-14)
    assert not np.allclose(dz, p - targets)


def test_softmax_gradient_via_projection(rng):
    z = rng.standard_normal((3, 5)) * 2
    projection = rng.standard_normal(z.shape)
    p = ref.softmax(z)

    # The chain rule through softmax: dL/dz = p * (g - sum_j g_j p_j) per row.
    analytic = p * (projection - np.sum(projection * p, axis=1, keepdims=True))

    numeric = numerical_gradient(lambda v: float(np.sum(projection * ref.softmax(v))), z)
    np.testing.assert_allclose(analytic, numeric, **FINITE_DIFFERENCE_TOLERANCE)


def test_log_softmax_gradient_via_projection(rng):
    z = rng.standard_normal((3, 5)) * 2
    projection = rng.standard_normal(z.shape)
    p = ref.softmax(z)

    # The chain rule through log-softmax: dL/dz = g - p * sum_j g_j per row.
    analytic = projection - p * np.sum(projection, axis=1, keepdims=True)

    numeric = numerical_gradient(lambda v: float(np.sum(projection * ref.log_softmax(v))), z)
    np.testing.assert_allclose(analytic, numeric, **FINITE_DIFFERENCE_TOLERANCE)


def test_softmax_is_exp_of_log_softmax(rng):
    z = rng.standard_normal((4, 6)) * 5

    p = ref.softmax(z)
    log_p = ref.log_softmax(z)

    np.testing.assert_allclose(p, np.exp(log_p), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(p.sum(axis=1), np.ones(4), rtol=1e-14)


def test_cross_entropy_matches_log_softmax(rng):
    z = rng.standard_normal((4, 3))
    targets = random_probability_targets(rng, z.shape)

    loss, _ = ref.softmax_cross_entropy(z, targets, reduction="none")

    expected = -np.sum(targets * ref.log_softmax(z), axis=1)
    np.testing.assert_allclose(loss, expected, rtol=1e-13, atol=1e-15)


def test_cross_entropy_one_hot_equals_labels(rng):
    z = rng.standard_normal((4, 3))
    labels = np.array([2, 0, 1, 2])
    one_hot = np.eye(3)[labels]

    label_loss, label_dz = ref.softmax_cross_entropy(z, labels)
    one_hot_loss, one_hot_dz = ref.softmax_cross_entropy(z, one_hot)

    assert label_loss == pytest.approx(one_hot_loss, rel=1e-14)
    np.testing.assert_allclose(label_dz, one_hot_dz, rtol=1e-14, atol=1e-16)


# ---------------------------------------------------------------------------
# Exact hand-computed cases
# ---------------------------------------------------------------------------

# x (2, 3), weight (3, 4), bias (4,): every value below was computed by hand.
LINEAR_X = np.array([[1, 2, 3], [4, 5, 6]])
LINEAR_WEIGHT = np.array([[1, 0, -1, 2], [0, 1, 1, -1], [2, -1, 0, 1]])
LINEAR_BIAS = np.array([1, -1, 0, 2])
LINEAR_DY = np.array([[1, 0, 2, -1], [0, 1, -1, 3]])


def test_linear_forward_exact():
    y = ref.linear_forward(LINEAR_X, LINEAR_WEIGHT, LINEAR_BIAS)

    expected = np.array([[8.0, -2.0, 1.0, 5.0], [17.0, -2.0, 1.0, 11.0]])
    np.testing.assert_array_equal(y, expected)


def test_linear_forward_without_bias_exact():
    y = ref.linear_forward(LINEAR_X, LINEAR_WEIGHT)

    expected = np.array([[7.0, -1.0, 1.0, 3.0], [16.0, -1.0, 1.0, 9.0]])
    np.testing.assert_array_equal(y, expected)


def test_linear_backward_exact():
    dx, dweight, dbias = ref.linear_backward(LINEAR_X, LINEAR_WEIGHT, LINEAR_DY)

    np.testing.assert_array_equal(dx, [[-3.0, 3.0, 1.0], [7.0, -3.0, 2.0]])
    np.testing.assert_array_equal(
        dweight, [[1.0, 4.0, -2.0, 11.0], [2.0, 5.0, -1.0, 13.0], [3.0, 6.0, 0.0, 15.0]]
    )
    # One entry per output column, each summed over the two rows of the batch.
    assert dbias.shape == (4,)
    np.testing.assert_array_equal(dbias, [1.0, 1.0, 1.0, 2.0])


def test_linear_backward_skips_dx():
    dx, dweight, dbias = ref.linear_backward(LINEAR_X, LINEAR_WEIGHT, LINEAR_DY, need_dx=False)

    assert dx is None
    np.testing.assert_array_equal(dweight[0], [1.0, 4.0, -2.0, 11.0])
    np.testing.assert_array_equal(dbias, [1.0, 1.0, 1.0, 2.0])


LOG_2 = math.log(2.0)
SOFTPLUS_MINUS_1 = math.log1p(math.e) - 1.0  # log(1 + e) - 1
P_MINUS_INF_ROW = [0.0, 1.0 / (1.0 + math.e), math.e / (1.0 + math.e)]  # softmax of [-inf, 0, 1]

# (z, label, loss, dz) for reduction="mean" with one row.
EXACT_CLASS_INDEX_CASES = {
    "equal-logits": ([[0.0, 0.0]], 0, LOG_2, [[-0.5, 0.5]]),
    "huge-logit-correct": ([[1e8, 0.0]], 0, 0.0, [[0.0, 0.0]]),
    "huge-logit-wrong": ([[1e8, 0.0]], 1, 1e8, [[1.0, -1.0]]),
    "very-negative-target": ([[-1e3, 0.0]], 0, 1e3, [[-1.0, 1.0]]),
    "very-negative-other": ([[-1e3, 0.0]], 1, 0.0, [[0.0, 0.0]]),
    "gaps-of-1e3": ([[1e3, 0.0, -1e3]], 2, 2e3, [[1.0, 0.0, -1.0]]),
    "minus-inf-other": (
        [[-np.inf, 0.0, 1.0]],
        2,
        SOFTPLUS_MINUS_1,
        [[0.0, P_MINUS_INF_ROW[1], P_MINUS_INF_ROW[2] - 1.0]],
    ),
    "minus-inf-target": (
        [[-np.inf, 0.0, 1.0]],
        0,
        np.inf,
        [[-1.0, P_MINUS_INF_ROW[1], P_MINUS_INF_ROW[2]]],
    ),
}


@pytest.mark.parametrize("case", list(EXACT_CLASS_INDEX_CASES))
def test_cross_entropy_class_index_exact(case):
    z, label, expected_loss, expected_dz = EXACT_CLASS_INDEX_CASES[case]

    loss, dz = ref.softmax_cross_entropy(np.array(z), np.array([label]))

    assert loss == pytest.approx(expected_loss, rel=1e-15, abs=1e-15)
    np.testing.assert_allclose(dz, expected_dz, rtol=1e-15, atol=1e-15)


# (z, targets, per-row loss, dz) for reduction="sum" with one row.
EXACT_PROBABILITY_CASES = {
    "uniform": ([[0.0, 0.0]], [[0.5, 0.5]], LOG_2, [[0.0, 0.0]]),
    "sum-2": ([[0.0, 0.0]], [[1.0, 1.0]], 2 * LOG_2, [[0.0, 0.0]]),
    "sum-half": ([[0.0, 0.0]], [[0.5, 0.0]], 0.5 * LOG_2, [[-0.25, 0.25]]),
    "all-zero": ([[3.0, -1.0]], [[0.0, 0.0]], 0.0, [[0.0, 0.0]]),
    "zero-target-at-minus-inf": (
        [[-np.inf, 0.0, 1.0]],
        [[0.0, 0.0, 1.0]],
        SOFTPLUS_MINUS_1,
        [[0.0, P_MINUS_INF_ROW[1], P_MINUS_INF_ROW[2] - 1.0]],
    ),
    "positive-target-at-minus-inf": (
        [[-np.inf, 0.0, 1.0]],
        [[0.5, 0.0, 0.5]],
        np.inf,
        [[-0.5, P_MINUS_INF_ROW[1], P_MINUS_INF_ROW[2] - 0.5]],
    ),
}


@pytest.mark.parametrize("case", list(EXACT_PROBABILITY_CASES))
def test_cross_entropy_probability_exact(case):
    z, targets, expected_loss, expected_dz = EXACT_PROBABILITY_CASES[case]

    loss, dz = ref.softmax_cross_entropy(np.array(z), np.array(targets), reduction="sum")

    assert loss == pytest.approx(expected_loss, rel=1e-15, abs=1e-15)
    np.testing.assert_allclose(dz, expected_dz, rtol=1e-15, atol=1e-15)


def test_cross_entropy_mean_divides_by_batch():
    z = np.zeros((4, 2))
    labels = np.array([0, 1, 0, 1])

    mean_loss, mean_dz = ref.softmax_cross_entropy(z, labels, reduction="mean")
    sum_loss, sum_dz = ref.softmax_cross_entropy(z, labels, reduction="sum")
    row_losses, row_dz = ref.softmax_cross_entropy(z, labels, reduction="none")

    assert mean_loss == pytest.approx(LOG_2, rel=1e-15)
    assert sum_loss == pytest.approx(4 * LOG_2, rel=1e-15)
    np.testing.assert_allclose(row_losses, np.full(4, LOG_2), rtol=1e-15)
    np.testing.assert_allclose(mean_dz, sum_dz / 4, rtol=1e-15)
    np.testing.assert_array_equal(row_dz, sum_dz)


def test_cross_entropy_loss_types():
    z = np.zeros((2, 3), dtype=np.float32)
    labels = np.array([0, 2])

    mean_loss, _ = ref.softmax_cross_entropy(z, labels, reduction="mean")
    sum_loss, _ = ref.softmax_cross_entropy(z, labels, reduction="sum")
    row_losses, _ = ref.softmax_cross_entropy(z, labels, reduction="none")

    assert type(mean_loss) is float
    assert type(sum_loss) is float
    assert isinstance(row_losses, np.ndarray)
    assert row_losses.dtype == np.float32
    assert row_losses.shape == (2,)


def test_cross_entropy_float32_mean_survives_sum_overflow():
    # Each row loss is lse - s = 0 - (-3e38), which float32 holds, but their sum
    # 6e38 does not. The sum is accumulated in float64 and then rounded.
    z = np.array([[1e38, -2e38], [1e38, -2e38]], dtype=np.float32)
    labels = np.array([1, 1])

    mean_loss, _ = ref.softmax_cross_entropy(z, labels, reduction="mean")
    sum_loss, _ = ref.softmax_cross_entropy(z, labels, reduction="sum")

    assert mean_loss == float(np.float32(3e38))
    assert sum_loss == math.inf


def test_cross_entropy_infinite_row_losses_of_both_signs():
    # A negative probability target at a -inf logit gives the row loss -inf, and
    # the sum inf + (-inf) is NaN, without a warning.
    z = np.array([[-np.inf, 0.0], [-np.inf, 0.0]])
    targets = np.array([[1.0, 0.0], [-1.0, 0.0]])

    row_losses, _ = ref.softmax_cross_entropy(z, targets, reduction="none")
    sum_loss, _ = ref.softmax_cross_entropy(z, targets, reduction="sum")
    mean_loss, _ = ref.softmax_cross_entropy(z, targets, reduction="mean")

    np.testing.assert_array_equal(row_losses, [np.inf, -np.inf])
    assert math.isnan(sum_loss)
    assert math.isnan(mean_loss)


def test_softmax_exact():
    z = np.array([[0.0, 0.0], [0.0, math.log(3.0)], [1e3, 0.0]])

    p = ref.softmax(z)

    np.testing.assert_allclose(p, [[0.5, 0.5], [0.25, 0.75], [1.0, 0.0]], rtol=1e-15)


def test_log_softmax_finite_where_softmax_underflows():
    z = np.array([[0.0, -1e4]])

    log_p = ref.log_softmax(z)

    np.testing.assert_array_equal(log_p, [[0.0, -1e4]])
    np.testing.assert_array_equal(ref.softmax(z), [[1.0, 0.0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_extremes_exact(dtype):
    x = np.array([-np.inf, -1000.0, 0.0, 1000.0, np.inf], dtype=dtype)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = ref.sigmoid_forward(x)

    np.testing.assert_array_equal(y, np.array([0.0, 0.0, 0.5, 1.0, 1.0], dtype=dtype))
    assert y.dtype == dtype


def test_sigmoid_negative_branch_precision():
    # sigmoid(x) keeps full relative precision for negative x, where 1 - sigmoid(-x)
    # would round to 0.
    y = ref.sigmoid_forward(np.array([-30.0, -700.0]))

    assert y[0] == pytest.approx(1.0 / (1.0 + math.exp(30.0)), rel=1e-15)
    # sigmoid(-700) = exp(-700) * (1 - exp(-700) + ...), and exp(-700) is far below
    # float64 epsilon.
    assert y[1] == pytest.approx(math.exp(-700.0), rel=1e-15)


def test_sigmoid_float32_no_overflow():
    x = np.array([-100.0, -89.0], dtype=np.float32)

    y = ref.sigmoid_forward(x)

    assert y.dtype == np.float32
    assert np.all(y >= 0.0)
    assert np.all(np.isfinite(y))


def test_sigmoid_backward_exact():
    y = np.array([0.0, 0.5, 0.25, 1.0])
    dy = np.array([3.0, 4.0, 8.0, 2.0])

    dx = ref.sigmoid_backward(y, dy)

    np.testing.assert_array_equal(dx, [0.0, 1.0, 1.5, 0.0])


def test_tanh_exact():
    y = ref.tanh_forward(np.array([-np.inf, 0.0, np.inf]))
    dx = ref.tanh_backward(np.array([-1.0, 0.0, 0.5, 1.0]), np.array([2.0, 2.0, 2.0, 2.0]))

    np.testing.assert_array_equal(y, [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(dx, [0.0, 2.0, 1.5, 0.0])


def test_relu_exact():
    x = np.array([-2.0, -0.0, 0.0, 3.0, np.inf, -np.inf])

    y = ref.relu_forward(x)

    np.testing.assert_array_equal(y, [0.0, 0.0, 0.0, 3.0, np.inf, 0.0])


def test_relu_derivative_at_zero_is_zero():
    y = np.array([0.0, -0.0, 1e-300, 2.0])
    dy = np.array([5.0, 5.0, 5.0, 5.0])

    dx = ref.relu_backward(y, dy)

    np.testing.assert_array_equal(dx, [0.0, 0.0, 5.0, 5.0])


def _extreme_calls():
    """Yield (id, thunk) for calls whose IEEE results include inf, 0 and NaN."""
    extremes = np.array([[-np.inf, -1e300, -1000.0, 0.0], [1000.0, 1e300, np.inf, np.nan]])
    extreme_dy = np.array([[np.inf, -1e300], [np.nan, 1e300]])
    yield "sigmoid_forward", lambda: ref.sigmoid_forward(extremes)
    yield "tanh_forward", lambda: ref.tanh_forward(extremes)
    yield "relu_forward", lambda: ref.relu_forward(extremes)
    yield "sigmoid_backward", lambda: ref.sigmoid_backward(extremes, extremes[::-1])
    yield "tanh_backward", lambda: ref.tanh_backward(extremes, extremes[::-1])
    yield "relu_backward", lambda: ref.relu_backward(extremes, extremes[::-1])
    yield "linear_forward", lambda: ref.linear_forward(extremes, extremes.T, extremes[0, :2])
    yield "linear_backward", lambda: ref.linear_backward(extremes, extremes.T, extreme_dy)
    yield "softmax", lambda: ref.softmax(extremes)
    yield "log_softmax", lambda: ref.log_softmax(extremes)
    yield "cross_entropy_labels", lambda: ref.softmax_cross_entropy(extremes, np.array([0, 2]))
    yield "cross_entropy_probabilities", lambda: ref.softmax_cross_entropy(
        extremes, np.array([[0.0, 0.5, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0]])
    )
    yield "log_softmax_no_classes", lambda: ref.log_softmax(np.zeros((2, 0)))
    yield "cross_entropy_empty_mean", lambda: ref.softmax_cross_entropy(
        np.zeros((0, 3)), np.zeros(0, dtype=np.int64)
    )


EXTREME_CALLS = dict(_extreme_calls())


@pytest.mark.parametrize("call", list(EXTREME_CALLS))
def test_extreme_inputs_raise_no_fp_errors(call):
    # np.errstate(all="raise") turns every floating-point warning that would escape
    # from the reference into FloatingPointError.
    with np.errstate(all="raise"):
        EXTREME_CALLS[call]()


# ---------------------------------------------------------------------------
# NaN and infinity propagation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_activation_forward_propagates_nan(activation):
    forward, _ = ACTIVATIONS[activation]

    y = forward(np.array([1.0, np.nan, -1.0]))

    assert np.isnan(y[1])
    assert np.isfinite(y[0])
    assert np.isfinite(y[2])


# (y, dy) pairs that give NaN in every backward pass.
BACKWARD_NAN_CASES = {
    "nan-y": (np.nan, 1.0),
    "nan-dy-positive-y": (0.5, np.nan),
    "nan-dy-zero-y": (0.0, np.nan),
    "nan-both": (np.nan, np.nan),
}


@pytest.mark.parametrize("case", list(BACKWARD_NAN_CASES))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_activation_backward_propagates_nan(activation, case):
    _, backward = ACTIVATIONS[activation]
    y_value, dy_value = BACKWARD_NAN_CASES[case]

    dx = backward(np.array([y_value, 0.5]), np.array([dy_value, 1.0]))

    assert np.isnan(dx[0])
    assert np.isfinite(dx[1])


def test_relu_backward_inf_dy_at_zero():
    # 0 * inf is NaN under IEEE rules, and the mask multiplies like any product.
    dx = ref.relu_backward(np.array([0.0, -1.0, 1.0]), np.array([np.inf, -np.inf, np.inf]))

    assert np.isnan(dx[0])
    assert np.isnan(dx[1])
    assert dx[2] == np.inf


def test_linear_forward_propagates_nan():
    x = np.ones((3, 2))
    x[1, 0] = np.nan

    y = ref.linear_forward(x, np.ones((2, 4)), np.zeros(4))

    assert np.all(np.isnan(y[1]))
    assert np.all(np.isfinite(y[0]))
    assert np.all(np.isfinite(y[2]))


def test_linear_backward_propagates_nan_in_dy():
    x = np.ones((3, 2))
    weight = np.ones((2, 4))
    dy = np.ones((3, 4))
    dy[1, 2] = np.nan

    dx, dweight, dbias = ref.linear_backward(x, weight, dy)

    assert np.all(np.isnan(dx[1]))
    assert np.all(np.isfinite(dx[[0, 2]]))
    assert np.all(np.isnan(dweight[:, 2]))
    assert np.all(np.isfinite(dweight[:, [0, 1, 3]]))
    assert np.isnan(dbias[2])
    assert np.all(np.isfinite(dbias[[0, 1, 3]]))


def test_linear_backward_propagates_nan_in_x():
    x = np.ones((3, 2))
    x[0, 1] = np.nan

    dx, dweight, dbias = ref.linear_backward(x, np.ones((2, 4)), np.ones((3, 4)))

    assert np.all(np.isfinite(dx))
    assert np.all(np.isnan(dweight[1]))
    assert np.all(np.isfinite(dweight[0]))
    assert np.all(np.isfinite(dbias))


# Rows of z that softmax maps to NaN, next to an ordinary row.
NAN_ROWS = {
    "nan-entry": [0.0, np.nan, 1.0],
    "max-plus-inf": [np.inf, 0.0, 1.0],
    "all-minus-inf": [-np.inf, -np.inf, -np.inf],
}


@pytest.mark.parametrize("row", list(NAN_ROWS))
@pytest.mark.parametrize("function", ["softmax", "log_softmax"])
def test_softmax_nan_rows(function, row):
    z = np.array([NAN_ROWS[row], [1.0, 2.0, 3.0]])

    result = getattr(ref, function)(z)

    assert np.all(np.isnan(result[0]))
    assert np.all(np.isfinite(result[1]))


@pytest.mark.parametrize("row", list(NAN_ROWS))
def test_cross_entropy_nan_rows(row):
    z = np.array([NAN_ROWS[row], [1.0, 2.0, 3.0]])
    labels = np.array([1, 0])

    row_losses, dz = ref.softmax_cross_entropy(z, labels, reduction="none")
    mean_loss, _ = ref.softmax_cross_entropy(z, labels, reduction="mean")

    assert np.isnan(row_losses[0])
    assert np.isfinite(row_losses[1])
    assert np.all(np.isnan(dz[0]))
    assert np.all(np.isfinite(dz[1]))
    assert math.isnan(mean_loss)


def test_cross_entropy_nan_probability_targets():
    z = np.zeros((2, 3))
    targets = np.array([[np.nan, 0.5, 0.5], [0.2, 0.3, 0.5]])

    row_losses, dz = ref.softmax_cross_entropy(z, targets, reduction="none")

    assert np.isnan(row_losses[0])
    assert np.isfinite(row_losses[1])
    assert np.all(np.isnan(dz[0]))
    assert np.all(np.isfinite(dz[1]))


# (first row of z, its probability targets): rows whose loss is NaN although the
# 0 * log 0 = 0 rule skips some or all of their targets.
NAN_ROWS_WITH_ZERO_TARGETS = {
    "nan-entry-all-zero": ([0.0, np.nan, 1.0], [0.0, 0.0, 0.0]),
    "nan-at-zero-target": ([0.0, np.nan, 1.0], [0.5, 0.0, 0.5]),
    "nan-at-only-target": ([0.0, np.nan, 1.0], [0.0, 1.0, 0.0]),
    "all-nan-all-zero": ([np.nan, np.nan, np.nan], [0.0, 0.0, 0.0]),
    "plus-inf-all-zero": ([np.inf, 0.0, 1.0], [0.0, 0.0, 0.0]),
    "plus-inf-at-zero-target": ([np.inf, 0.0, 1.0], [0.0, 0.3, 0.7]),
    "all-minus-inf-all-zero": ([-np.inf, -np.inf, -np.inf], [0.0, 0.0, 0.0]),
}


@pytest.mark.parametrize("case", list(NAN_ROWS_WITH_ZERO_TARGETS))
def test_cross_entropy_nan_row_with_zero_targets(case):
    row, row_targets = NAN_ROWS_WITH_ZERO_TARGETS[case]
    z = np.array([row, [1.0, 2.0, 3.0]])
    targets = np.array([row_targets, [0.2, 0.3, 0.5]])

    row_losses, dz = ref.softmax_cross_entropy(z, targets, reduction="none")
    sum_loss, _ = ref.softmax_cross_entropy(z, targets, reduction="sum")
    mean_loss, _ = ref.softmax_cross_entropy(z, targets, reduction="mean")

    assert np.isnan(row_losses[0])
    assert np.isfinite(row_losses[1])
    assert np.all(np.isnan(dz[0]))
    assert np.all(np.isfinite(dz[1]))
    assert math.isnan(sum_loss)
    assert math.isnan(mean_loss)


def test_zero_targets_at_minus_inf_finite():
    # -inf entries do not make a row with a finite maximum NaN. p is 0 there, and
    # a target of 0 adds no loss.
    z = np.array([[-np.inf, 0.0, -np.inf], [-np.inf, -np.inf, 5.0]])
    targets = np.zeros((2, 3))

    row_losses, dz = ref.softmax_cross_entropy(z, targets, reduction="none")

    np.testing.assert_array_equal(row_losses, [0.0, 0.0])
    np.testing.assert_array_equal(dz, np.zeros((2, 3)))


# ---------------------------------------------------------------------------
# Zero-size shapes
# ---------------------------------------------------------------------------

LINEAR_EMPTY_SHAPES = {
    "no-rows": (0, 3, 2),
    "no-features": (4, 0, 2),
    "no-outputs": (4, 3, 0),
    "all-empty": (0, 0, 0),
}


@pytest.mark.parametrize("case", list(LINEAR_EMPTY_SHAPES))
def test_linear_forward_zero_size(rng, case):
    batch, n_features, n_outputs = LINEAR_EMPTY_SHAPES[case]
    x = rng.standard_normal((batch, n_features))
    weight = rng.standard_normal((n_features, n_outputs))
    bias = rng.standard_normal(n_outputs)

    y = ref.linear_forward(x, weight, bias)

    assert y.shape == (batch, n_outputs)
    # The product is an empty sum when n_features == 0, so y is the bias in every row.
    np.testing.assert_allclose(y, x @ weight + bias, rtol=1e-15)


def test_linear_forward_no_features_gives_bias():
    bias = np.array([1.5, -2.0])

    y = ref.linear_forward(np.zeros((3, 0)), np.zeros((0, 2)), bias)

    np.testing.assert_array_equal(y, np.tile(bias, (3, 1)))


@pytest.mark.parametrize("case", list(LINEAR_EMPTY_SHAPES))
def test_linear_backward_zero_size(rng, case):
    batch, n_features, n_outputs = LINEAR_EMPTY_SHAPES[case]
    x = rng.standard_normal((batch, n_features))
    weight = rng.standard_normal((n_features, n_outputs))
    dy = rng.standard_normal((batch, n_outputs))

    dx, dweight, dbias = ref.linear_backward(x, weight, dy)

    assert dx.shape == (batch, n_features)
    assert dweight.shape == (n_features, n_outputs)
    assert dbias.shape == (n_outputs,)
    np.testing.assert_allclose(dx, dy @ weight.T, rtol=1e-15)
    np.testing.assert_allclose(dweight, x.T @ dy, rtol=1e-15)
    np.testing.assert_allclose(dbias, dy.sum(axis=0), rtol=1e-15)


def test_linear_backward_empty_batch_gives_zeros():
    dx, dweight, dbias = ref.linear_backward(np.zeros((0, 3)), np.ones((3, 2)), np.zeros((0, 2)))

    assert dx.shape == (0, 3)
    np.testing.assert_array_equal(dweight, np.zeros((3, 2)))
    np.testing.assert_array_equal(dbias, np.zeros(2))


@pytest.mark.parametrize("shape", [(0,), (0, 3), (2, 0, 4)], ids=["0", "0x3", "2x0x4"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_activation_zero_size(activation, shape):
    forward, backward = ACTIVATIONS[activation]
    x = np.zeros(shape)

    y = forward(x)
    dx = backward(y, np.zeros(shape))

    assert y.shape == shape
    assert dx.shape == shape


@pytest.mark.parametrize("shape", [(0, 3), (2, 0), (0, 0)], ids=["0x3", "2x0", "0x0"])
@pytest.mark.parametrize("function", ["softmax", "log_softmax"])
def test_softmax_zero_size(function, shape):
    result = getattr(ref, function)(np.zeros(shape))

    assert result.shape == shape


def test_cross_entropy_empty_batch_mean_is_nan():
    z = np.zeros((0, 3))

    label_loss, label_dz = ref.softmax_cross_entropy(z, np.zeros(0, dtype=np.int64))
    probability_loss, probability_dz = ref.softmax_cross_entropy(z, np.zeros((0, 3)))

    assert math.isnan(label_loss)
    assert math.isnan(probability_loss)
    assert label_dz.shape == (0, 3)
    assert probability_dz.shape == (0, 3)


def test_cross_entropy_empty_batch_sum_is_zero():
    z = np.zeros((0, 3))

    loss, dz = ref.softmax_cross_entropy(z, np.zeros(0, dtype=np.int64), reduction="sum")

    assert loss == 0.0
    assert type(loss) is float
    assert dz.shape == (0, 3)


def test_cross_entropy_empty_batch_none():
    loss, dz = ref.softmax_cross_entropy(
        np.zeros((0, 3)), np.zeros(0, dtype=np.int64), reduction="none"
    )

    assert loss.shape == (0,)
    assert dz.shape == (0, 3)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_no_classes_probabilities(reduction):
    z = np.zeros((3, 0))

    loss, dz = ref.softmax_cross_entropy(z, np.zeros((3, 0)), reduction=reduction)

    assert dz.shape == (3, 0)
    np.testing.assert_array_equal(loss, np.zeros(3) if reduction == "none" else 0.0)


def test_cross_entropy_no_classes_labels_rejected():
    with pytest.raises(IndexError, match=re.escape("targets[0] = 0")):
        ref.softmax_cross_entropy(np.zeros((2, 0)), np.array([0, 0]))


# ---------------------------------------------------------------------------
# Class-index targets
# ---------------------------------------------------------------------------


def _dtype_id(dtype):
    return np.dtype(dtype).name


@pytest.mark.parametrize("dtype", INTEGER_DTYPES, ids=_dtype_id)
def test_labels_of_every_integer_dtype(rng, dtype):
    z = rng.standard_normal((4, 3))
    labels = np.array([2, 0, 1, 2])
    expected_loss, expected_dz = ref.softmax_cross_entropy(z, labels.astype(np.int64))

    loss, dz = ref.softmax_cross_entropy(z, labels.astype(dtype))

    assert loss == expected_loss
    np.testing.assert_array_equal(dz, expected_dz)


@pytest.mark.parametrize("dtype", INTEGER_DTYPES, ids=_dtype_id)
def test_label_too_large_rejected(dtype):
    labels = np.array([0, 2, 3, 1], dtype=dtype)

    with pytest.raises(IndexError) as excinfo:
        ref.softmax_cross_entropy(np.zeros((4, 3)), labels)

    message = str(excinfo.value)
    assert "targets[2] = 3" in message
    assert "0 <= label < 3" in message


@pytest.mark.parametrize("dtype", SIGNED_DTYPES, ids=_dtype_id)
def test_negative_label_rejected(dtype):
    labels = np.array([0, 1, -1, 1], dtype=dtype)

    with pytest.raises(IndexError) as excinfo:
        ref.softmax_cross_entropy(np.zeros((4, 3)), labels)

    message = str(excinfo.value)
    assert "targets[2] = -1" in message
    assert "0 <= label < 3" in message


def test_uint64_label_above_int64_max_rejected():
    too_large = 2**63 + 5
    labels = np.array([1, too_large], dtype=np.uint64)

    with pytest.raises(IndexError) as excinfo:
        ref.softmax_cross_entropy(np.zeros((2, 3)), labels)

    assert f"targets[1] = {too_large}" in str(excinfo.value)


def test_int8_minimum_label_rejected():
    labels = np.array([-128], dtype=np.int8)

    with pytest.raises(IndexError, match=re.escape("targets[0] = -128")):
        ref.softmax_cross_entropy(np.zeros((1, 3)), labels)


def test_first_bad_label_reported():
    labels = np.array([0, 7, -1, 9])

    with pytest.raises(IndexError, match=re.escape("targets[1] = 7")):
        ref.softmax_cross_entropy(np.zeros((4, 3)), labels)


def test_labels_checked_before_nan_logits():
    z = np.full((2, 3), np.nan)

    with pytest.raises(IndexError, match=re.escape("targets[1] = 3")):
        ref.softmax_cross_entropy(z, np.array([0, 3]))


INVALID_TARGET_TYPES = {
    "float-labels": np.array([0.0, 1.0]),
    "float32-labels": np.array([0.0, 1.0], dtype=np.float32),
    "bool-labels": np.array([True, False]),
    "bool-matrix": np.array([[True, False, False], [False, True, False]]),
    "complex-targets": np.ones((2, 3), dtype=np.complex128),
    "object-targets": np.array([[0.1, 0.2, None], [0.3, 0.3, 0.4]], dtype=object),
    "string-labels": np.array(["0", "1"]),
}


@pytest.mark.parametrize("case", list(INVALID_TARGET_TYPES))
def test_invalid_target_types_rejected(case):
    with pytest.raises(TypeError, match="targets"):
        ref.softmax_cross_entropy(np.zeros((2, 3)), INVALID_TARGET_TYPES[case])


INVALID_TARGET_SHAPES = {
    "labels-2d": (np.array([[0], [1]]), "(2, 1)"),
    "labels-too-short": (np.array([0]), "1 class indices"),
    "labels-too-long": (np.array([0, 1, 2]), "3 class indices"),
    "labels-0d": (np.array(1), "shape ()"),
    "probabilities-wrong-columns": (np.full((2, 4), 0.25), "(2, 4)"),
    "probabilities-wrong-rows": (np.full((3, 3), 0.25), "(3, 3)"),
    "probabilities-3d": (np.full((2, 3, 1), 0.25), "(2, 3, 1)"),
}


@pytest.mark.parametrize("case", list(INVALID_TARGET_SHAPES))
def test_invalid_target_shapes_rejected(case):
    targets, shape_text = INVALID_TARGET_SHAPES[case]

    with pytest.raises(ValueError) as excinfo:
        ref.softmax_cross_entropy(np.zeros((2, 3)), targets)

    message = str(excinfo.value)
    assert shape_text in message
    assert "(2, 3)" in message


@pytest.mark.parametrize("reduction", ["avg", "MEAN", "", None, 1])
def test_invalid_reduction_rejected(reduction):
    with pytest.raises(ValueError) as excinfo:
        ref.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1]), reduction=reduction)

    message = str(excinfo.value)
    assert repr(reduction) in message
    assert "'mean', 'sum' or 'none'" in message


# ---------------------------------------------------------------------------
# Shape checks
# ---------------------------------------------------------------------------

# (call, texts that the ValueError message must contain)
SHAPE_ERRORS = {
    "linear-x-1d": (lambda: ref.linear_forward(np.ones(3), np.ones((3, 2))), ["x", "(3,)"]),
    "linear-weight-1d": (
        lambda: ref.linear_forward(np.ones((2, 3)), np.ones(3)),
        ["weight", "(3,)"],
    ),
    "linear-inner-mismatch": (
        lambda: ref.linear_forward(np.ones((3, 5)), np.ones((4, 2))),
        ["(3, 5)", "(4, 2)"],
    ),
    "linear-bias-length": (
        lambda: ref.linear_forward(np.ones((3, 5)), np.ones((5, 4)), np.ones(3)),
        ["bias", "(3,)", "(5, 4)"],
    ),
    "linear-bias-2d": (
        lambda: ref.linear_forward(np.ones((3, 5)), np.ones((5, 4)), np.ones((1, 4))),
        ["bias", "(1, 4)"],
    ),
    "linear-backward-dy-shape": (
        lambda: ref.linear_backward(np.ones((3, 5)), np.ones((5, 4)), np.ones((3, 5))),
        ["dy", "(3, 5)", "(5, 4)", "(3, 4)"],
    ),
    "linear-backward-dy-1d": (
        lambda: ref.linear_backward(np.ones((3, 5)), np.ones((5, 4)), np.ones(4)),
        ["dy", "(4,)"],
    ),
    "linear-backward-inner-mismatch": (
        lambda: ref.linear_backward(np.ones((3, 5)), np.ones((4, 2)), np.ones((3, 2))),
        ["(3, 5)", "(4, 2)"],
    ),
    "sigmoid-backward-mismatch": (
        lambda: ref.sigmoid_backward(np.ones((2, 3)), np.ones((3, 2))),
        ["y", "dy", "(2, 3)", "(3, 2)"],
    ),
    "tanh-backward-mismatch": (
        lambda: ref.tanh_backward(np.ones(3), np.ones((1, 3))),
        ["(3,)", "(1, 3)"],
    ),
    "relu-backward-mismatch": (
        lambda: ref.relu_backward(np.ones((2, 3)), np.ones((2, 3, 1))),
        ["(2, 3)", "(2, 3, 1)"],
    ),
    "softmax-1d": (lambda: ref.softmax(np.ones(3)), ["z", "(3,)"]),
    "log-softmax-3d": (lambda: ref.log_softmax(np.ones((2, 3, 4))), ["z", "(2, 3, 4)"]),
    "cross-entropy-z-1d": (
        lambda: ref.softmax_cross_entropy(np.ones(3), np.array([0])),
        ["z", "(3,)"],
    ),
}


@pytest.mark.parametrize("case", list(SHAPE_ERRORS))
def test_shape_errors_name_shapes(case):
    call, expected_texts = SHAPE_ERRORS[case]

    with pytest.raises(ValueError) as excinfo:
        call()

    message = str(excinfo.value)
    for text in expected_texts:
        assert text in message, f"{text!r} missing from {message!r}"


# ---------------------------------------------------------------------------
# Dtypes, layouts and input handling
# ---------------------------------------------------------------------------


def sample_arguments(name, rng, dtype=np.float64):
    """Return (args, kwargs) for a typical call of the named public function."""
    batch, n_features, n_outputs = 3, 5, 4

    def draw(*shape):
        return rng.standard_normal(shape).astype(dtype)

    if name == "linear_forward":
        return (draw(batch, n_features), draw(n_features, n_outputs), draw(n_outputs)), {}
    if name == "linear_backward":
        return (draw(batch, n_features), draw(n_features, n_outputs), draw(batch, n_outputs)), {}
    if name in ("sigmoid_forward", "tanh_forward", "relu_forward", "softmax", "log_softmax"):
        return (draw(batch, n_outputs),), {}
    if name in ("sigmoid_backward", "tanh_backward", "relu_backward"):
        return (draw(batch, n_outputs), draw(batch, n_outputs)), {}
    if name == "cross_entropy_labels":
        return (draw(batch, n_outputs), np.array([3, 0, 1])), {"reduction": "none"}
    if name == "cross_entropy_probabilities":
        targets = rng.uniform(0.0, 1.0, (batch, n_outputs)).astype(dtype)
        return (draw(batch, n_outputs), targets), {"reduction": "none"}
    raise KeyError(name)


def call_by_name(name, *args, **kwargs):
    if name.startswith("cross_entropy"):
        return ref.softmax_cross_entropy(*args, **kwargs)
    return getattr(ref, name)(*args, **kwargs)


def result_arrays(result):
    """Return the arrays among a function's results, skipping None and Python floats."""
    results = result if isinstance(result, tuple) else (result,)
    return [item for item in results if isinstance(item, np.ndarray)]


CALL_NAMES = [
    "linear_forward", "linear_backward",
    "sigmoid_forward", "sigmoid_backward",
    "tanh_forward", "tanh_backward",
    "relu_forward", "relu_backward",
    "softmax", "log_softmax",
    "cross_entropy_labels", "cross_entropy_probabilities",
]
OUT_NAMES = [name for name in CALL_NAMES if name in ref.__all__ and name != "linear_backward"]

# (input dtype, computation dtype)
DTYPE_CONVERSIONS = {
    "float16": (np.float16, np.float32),
    "float32": (np.float32, np.float32),
    "float64": (np.float64, np.float64),
    "longdouble": (np.longdouble, np.float64),
    "int32": (np.int32, np.float64),
    "int8": (np.int8, np.float64),
    "uint16": (np.uint16, np.float64),
    "bool": (np.bool_, np.float64),
}


def _convert_float_inputs(args, dtype):
    """Cast every float array in args to dtype, leaving integer class indices alone.

    Integer and bool conversions first map the values to small non-negative
    integers, so that no cast is out of range.
    """
    dtype = np.dtype(dtype)
    converted = []
    for arg in args:
        if arg.dtype.kind == "f":
            if dtype.kind == "b":
                arg = arg > 0
            elif dtype.kind in "iu":
                arg = np.abs(np.round(arg * 3)).astype(dtype)
            else:
                arg = arg.astype(dtype)
        converted.append(arg)
    return tuple(converted)


@pytest.mark.parametrize("conversion", list(DTYPE_CONVERSIONS))
@pytest.mark.parametrize("name", CALL_NAMES)
def test_dtype_conversion(rng, name, conversion):
    input_dtype, computation_dtype = DTYPE_CONVERSIONS[conversion]
    args, kwargs = sample_arguments(name, rng)
    if name == "cross_entropy_probabilities" and np.dtype(input_dtype).kind != "f":
        # Integer targets are class indices and bool targets are rejected, so only
        # the float64 probabilities stay, and the common dtype is float64 anyway.
        args = _convert_float_inputs(args[:1], input_dtype) + args[1:]
    else:
        args = _convert_float_inputs(args, input_dtype)

    result = call_by_name(name, *args, **kwargs)

    for array in result_arrays(result):
        assert array.dtype == computation_dtype


@pytest.mark.parametrize("name", CALL_NAMES)
def test_float32_close_to_float64(rng, name):
    args, kwargs = sample_arguments(name, rng)
    args32 = _convert_float_inputs(args, np.float32)
    # The float64 result is computed from the same float32-rounded inputs.
    args64 = _convert_float_inputs(args32, np.float64)

    results32 = result_arrays(call_by_name(name, *args32, **kwargs))
    results64 = result_arrays(call_by_name(name, *args64, **kwargs))

    for result32, result64 in zip(results32, results64, strict=True):
        assert result32.dtype == np.float32
        np.testing.assert_allclose(result32, result64, **TOLERANCES[np.float32])


@pytest.mark.parametrize("name", CALL_NAMES)
def test_mixed_float_dtypes_promote(rng, name):
    args, kwargs = sample_arguments(name, rng)
    float_positions = [i for i, arg in enumerate(args) if arg.dtype.kind == "f"]
    if len(float_positions) < 2:
        pytest.skip("the call has a single floating-point input")
    mixed = list(args)
    mixed[float_positions[0]] = mixed[float_positions[0]].astype(np.float32)

    result = call_by_name(name, *mixed, **kwargs)

    for array in result_arrays(result):
        assert array.dtype == np.float64


def test_float16_with_float32_stays_float32(rng):
    y = rng.standard_normal((2, 3))

    dx = ref.sigmoid_backward(y.astype(np.float16), y.astype(np.float32))

    assert dx.dtype == np.float32


UNSUPPORTED_DTYPES = {
    "complex64": np.ones((2, 3), dtype=np.complex64),
    "complex128": np.ones((2, 3), dtype=np.complex128),
    "object": np.array([[1.0, None, 2.0], [0.0, 1.0, 2.0]], dtype=object),
    "string": np.array([["a", "b", "c"], ["d", "e", "f"]]),
    "datetime": np.zeros((2, 3), dtype="datetime64[s]"),
}


# (name of the rejected argument, call that passes the bad array as that argument)
UNSUPPORTED_DTYPE_CALLS = {
    "sigmoid_forward": ("x", lambda bad: ref.sigmoid_forward(bad)),
    "relu_backward": ("dy", lambda bad: ref.relu_backward(np.ones((2, 3)), bad)),
    "softmax": ("z", lambda bad: ref.softmax(bad)),
    "linear_forward": ("weight", lambda bad: ref.linear_forward(np.ones((3, 2)), bad)),
}


@pytest.mark.parametrize("dtype_case", list(UNSUPPORTED_DTYPES))
@pytest.mark.parametrize("name", list(UNSUPPORTED_DTYPE_CALLS))
def test_unsupported_dtypes_rejected(name, dtype_case):
    bad = UNSUPPORTED_DTYPES[dtype_case]
    argument, call = UNSUPPORTED_DTYPE_CALLS[name]

    with pytest.raises(TypeError) as excinfo:
        call(bad)

    message = str(excinfo.value)
    assert message.startswith(argument + " ")
    assert str(bad.dtype) in message


def _make_layout(array, layout):
    """Return a copy of array with the requested memory layout and the same values."""
    if layout == "fortran":
        return np.asfortranarray(array)
    if layout == "strided":
        padded = np.zeros(array.shape + (2,), dtype=array.dtype)
        padded[..., 0] = array
        return padded[..., 0]
    if layout == "byteswapped":
        return array.astype(array.dtype.newbyteorder())
    if layout == "readonly":
        copy = array.copy()
        copy.flags.writeable = False
        return copy
    raise KeyError(layout)


@pytest.mark.parametrize("layout", ["fortran", "strided", "byteswapped", "readonly"])
@pytest.mark.parametrize("name", CALL_NAMES)
def test_any_layout_gives_same_result(rng, name, layout):
    args, kwargs = sample_arguments(name, rng)
    expected = result_arrays(call_by_name(name, *args, **kwargs))

    laid_out = tuple(_make_layout(arg, layout) for arg in args)
    results = result_arrays(call_by_name(name, *laid_out, **kwargs))

    for result, reference_result in zip(results, expected, strict=True):
        assert result.flags.c_contiguous
        assert result.dtype.isnative
        np.testing.assert_array_equal(result, reference_result)


@pytest.mark.parametrize("name", CALL_NAMES)
def test_inputs_not_mutated(rng, name):
    args, kwargs = sample_arguments(name, rng)
    originals = [arg.copy() for arg in args]

    result = call_by_name(name, *args, **kwargs)

    for arg, original in zip(args, originals, strict=True):
        np.testing.assert_array_equal(arg, original)
    for array in result_arrays(result):
        for arg in args:
            assert not np.shares_memory(array, arg)


def test_python_lists_accepted():
    y = ref.linear_forward([[1, 2]], [[1.0], [2.0]], [0.5])
    loss, _ = ref.softmax_cross_entropy([[0.0, 0.0]], [1])

    np.testing.assert_array_equal(y, [[5.5]])
    assert loss == pytest.approx(LOG_2, rel=1e-15)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_activation_zero_dimensional(activation):
    forward, backward = ACTIVATIONS[activation]

    y = forward(0.5)
    dx = backward(y, 2.0)

    assert isinstance(y, np.ndarray)
    assert y.shape == ()
    assert isinstance(dx, np.ndarray)
    assert dx.shape == ()


# ---------------------------------------------------------------------------
# out= buffers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=_dtype_id)
@pytest.mark.parametrize("name", OUT_NAMES)
def test_out_receives_result(rng, name, dtype):
    args, kwargs = sample_arguments(name, rng, dtype)
    expected = call_by_name(name, *args, **kwargs)
    out = np.full(expected.shape, np.nan, dtype=dtype)

    returned = call_by_name(name, *args, out=out, **kwargs)

    assert returned is out
    np.testing.assert_array_equal(out, expected)


def _bad_out(expected, problem):
    """Return an out array that is wrong in exactly one way."""
    if problem == "wrong-shape":
        return np.empty(expected.shape[:-1] + (expected.shape[-1] + 1,), dtype=expected.dtype)
    if problem == "transposed-shape":
        return np.empty(expected.shape[::-1], dtype=expected.dtype)
    if problem == "wrong-dtype":
        return np.empty(expected.shape, dtype=np.float32)
    if problem == "byteswapped":
        return np.empty(expected.shape, dtype=expected.dtype.newbyteorder())
    if problem == "not-c-contiguous":
        return np.empty(expected.shape[::-1], dtype=expected.dtype).T
    if problem == "read-only":
        out = np.empty(expected.shape, dtype=expected.dtype)
        out.flags.writeable = False
        return out
    raise KeyError(problem)


OUT_PROBLEMS = {
    "wrong-shape": "shape",
    "transposed-shape": "shape",
    "wrong-dtype": "dtype",
    "byteswapped": "dtype",
    "not-c-contiguous": "C-contiguous",
    "read-only": "read-only",
}


@pytest.mark.parametrize("problem", list(OUT_PROBLEMS))
@pytest.mark.parametrize("name", OUT_NAMES)
def test_bad_out_rejected(rng, name, problem):
    args, kwargs = sample_arguments(name, rng)
    expected = call_by_name(name, *args, **kwargs)
    out = _bad_out(expected, problem)
    before = out.copy()

    with pytest.raises(ValueError) as excinfo:
        call_by_name(name, *args, out=out, **kwargs)

    message = str(excinfo.value)
    assert "out" in message
    assert OUT_PROBLEMS[problem] in message
    np.testing.assert_array_equal(out, before)


@pytest.mark.parametrize("name", OUT_NAMES)
def test_out_must_be_ndarray(rng, name):
    args, kwargs = sample_arguments(name, rng)
    expected = call_by_name(name, *args, **kwargs)

    with pytest.raises(TypeError, match="out must be a numpy.ndarray"):
        call_by_name(name, *args, out=expected.tolist(), **kwargs)


def test_out_shape_error_names_shapes():
    with pytest.raises(ValueError) as excinfo:
        ref.linear_forward(np.ones((3, 5)), np.ones((5, 4)), out=np.empty((4, 3)))

    message = str(excinfo.value)
    assert "(4, 3)" in message
    assert "(3, 4)" in message


def test_out_may_be_zero_size():
    out = np.empty((0, 4))

    returned = ref.linear_forward(np.ones((0, 5)), np.ones((5, 4)), out=out)

    assert returned is out


# linear_forward is left out: it rejects every overlap of out with an input.
IN_PLACE_NAMES = [name for name in OUT_NAMES if name != "linear_forward"]


@pytest.mark.parametrize("name", IN_PLACE_NAMES)
def test_out_may_be_own_input(rng, name):
    args, kwargs = sample_arguments(name, rng)
    expected = call_by_name(name, *args, **kwargs)
    buffer = args[0].copy()

    returned = call_by_name(name, buffer, *args[1:], out=buffer, **kwargs)

    assert returned is buffer
    np.testing.assert_array_equal(buffer, expected)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_backward_out_may_be_dy(rng, activation):
    _, backward = ACTIVATIONS[activation]
    y = rng.uniform(-0.9, 0.9, (3, 4))
    dy = rng.standard_normal((3, 4))
    expected = backward(y, dy)

    returned = backward(y, dy, out=dy)

    assert returned is dy
    np.testing.assert_array_equal(dy, expected)


def _shifted_view(array):
    """Return a view of ``array``'s buffer with its shape, starting one entry later."""
    flat = np.zeros(array.size + 1, dtype=array.dtype)
    flat[:-1] = array.reshape(-1)
    return flat[:-1].reshape(array.shape), flat[1:].reshape(array.shape)


# (call with the partly overlapping out, name of the overlapped input)
PARTIAL_OVERLAPS = {
    "sigmoid_forward": (lambda x, out: ref.sigmoid_forward(x, out=out), "x"),
    "relu_forward": (lambda x, out: ref.relu_forward(x, out=out), "x"),
    "tanh_backward": (lambda y, out: ref.tanh_backward(y, np.ones(y.shape), out=out), "y"),
    "relu_backward-dy": (lambda dy, out: ref.relu_backward(np.ones(dy.shape), dy, out=out), "dy"),
    "softmax": (lambda z, out: ref.softmax(z, out=out), "z"),
    "log_softmax": (lambda z, out: ref.log_softmax(z, out=out), "z"),
}


@pytest.mark.parametrize("case", list(PARTIAL_OVERLAPS))
def test_out_partly_overlapping_input_rejected(case):
    call, argument = PARTIAL_OVERLAPS[case]
    array, out = _shifted_view(np.arange(6.0).reshape(2, 3))

    with pytest.raises(ValueError) as excinfo:
        call(array, out)

    message = str(excinfo.value)
    assert message.startswith(f"out overlaps {argument} in memory")
    assert f"pass {argument} itself" in message


LINEAR_OVERLAPS = ["x", "weight", "bias"]


@pytest.mark.parametrize("argument", LINEAR_OVERLAPS)
def test_linear_out_overlapping_input_rejected(argument):
    # x (3, 3) @ weight (3, 3) has the shape of x and weight, so out can be
    # either of them. bias is the first row of out.
    x = np.arange(9.0).reshape(3, 3)
    weight = np.eye(3)
    bias = np.ones(3)
    if argument == "bias":
        out = np.zeros((3, 3))
        bias = out[0]
    else:
        out = {"x": x, "weight": weight}[argument]
    before = out.copy()

    with pytest.raises(ValueError) as excinfo:
        ref.linear_forward(x, weight, bias, out=out)

    assert str(excinfo.value) == f"out overlaps {argument} in memory: pass a separate array"
    np.testing.assert_array_equal(out, before)
