"""Tests for nnback.layers against nnback.reference and float64 finite differences."""

import math
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from nnback import reference
from nnback.layers import (
    MAX_CACHED_SHAPES,
    Linear,
    Parameter,
    ReLU,
    Sequential,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
    mlp,
)
from nnback.optim import SGD, Adam
from nnback.training import train_step

# np.matrix, which these tests pass as hostile input, warns that it is deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]

# Layer results against the NumPy reference, per dtype. Both sides sum in
# different orders (BLAS blocking, row-wise loss sums).
TOLERANCE = {
    np.float32: dict(rtol=1e-5, atol=1e-6),
    np.float64: dict(rtol=1e-12, atol=1e-14),
}

ACTIVATION_CLASSES = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}
ACTIVATION_REFERENCE = {
    "relu": (reference.relu_forward, reference.relu_backward),
    "sigmoid": (reference.sigmoid_forward, reference.sigmoid_backward),
    "tanh": (reference.tanh_forward, reference.tanh_backward),
}


def standard_normal(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def make_batch(n_rows, n_features, n_classes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_rows, n_features)).astype(dtype)
    labels = rng.integers(0, n_classes, size=n_rows)
    return x, labels


def reference_pass(model, x, targets, reduction="mean"):
    """Return (loss, logits, gradients by Parameter id, input gradient) computed with nnback.reference."""
    inputs, outputs = [], []
    h = x
    for layer in model.layers:
        inputs.append(h)
        if isinstance(layer, Linear):
            bias = None if layer.bias is None else layer.bias.data
            h = reference.linear_forward(h, layer.weight.data, bias)
        else:
            forward, _ = ACTIVATION_REFERENCE[type(layer).__name__.lower()]
            h = forward(h)
        outputs.append(h)

    loss, dy = reference.softmax_cross_entropy(h, targets, reduction=reduction)
    gradients = {}
    for layer, layer_input, layer_output in reversed(list(zip(model.layers, inputs, outputs))):
        if isinstance(layer, Linear):
            dy, dweight, dbias = reference.linear_backward(layer_input, layer.weight.data, dy)
            gradients[id(layer.weight)] = dweight
            if layer.bias is not None:
                gradients[id(layer.bias)] = dbias
        else:
            _, backward = ACTIVATION_REFERENCE[type(layer).__name__.lower()]
            dy = backward(layer_output, dy)
    return loss, h, gradients, dy


# ---------------------------------------------------------------------------
# Parameter
# ---------------------------------------------------------------------------


def test_parameter_wraps_float_array_without_copy():
    data = np.zeros((2, 3), dtype=np.float32)

    param = Parameter(data)

    assert param.data is data
    assert param.grad.shape == (2, 3)
    assert param.grad.dtype == np.float32
    assert not param.grad.any()


@pytest.mark.parametrize(
    "data, dtype",
    [
        pytest.param(np.arange(4), np.float64, id="int"),
        pytest.param(np.ones(3, dtype=np.float16), np.float32, id="float16"),
        pytest.param([[1.0, 2.0]], np.float64, id="list"),
        pytest.param(np.ones((3, 4), dtype=np.float32)[:, ::2], np.float32, id="strided"),
    ],
)
def test_parameter_converts_other_inputs(data, dtype):
    param = Parameter(data)

    assert param.dtype == dtype
    assert param.data.flags.c_contiguous
    assert param.data is not data


def test_parameter_rejects_complex():
    with pytest.raises(TypeError, match="complex"):
        Parameter(np.ones(2, dtype=np.complex128))


def test_parameter_data_setter_keeps_shape_and_dtype():
    param = Parameter(np.zeros((2, 3)))

    with pytest.raises(ValueError, match=r"must keep shape \(2, 3\) and dtype float64"):
        param.data = np.zeros((3, 2))
    with pytest.raises(ValueError, match="dtype float64"):
        param.grad = np.zeros((2, 3), dtype=np.float32)


def test_parameter_data_setter_accepts_matching_array():
    param = Parameter(np.zeros(3))
    new = np.ones(3)

    param.data = new

    assert param.data is new


@pytest.mark.parametrize(
    "make_subclass",
    [
        pytest.param(np.asmatrix, id="matrix"),
        pytest.param(lambda array: np.ma.masked_array(array, mask=False), id="masked"),
    ],
)
def test_parameter_subclass_assignment_steps(make_subclass):
    # np.matrix stays 2-D when reshaped, so a stored matrix broke the 1-D views
    # that SGD writes through, and step raised TypeError.
    param = Parameter(np.zeros((2, 3)))
    data = make_subclass(np.ones((2, 3)))
    grad = make_subclass(np.full((2, 3), 2.0))

    param.data = data
    param.grad = grad
    SGD([param], lr=0.5).step()

    assert type(param.data) is np.ndarray
    assert type(param.grad) is np.ndarray
    np.testing.assert_array_equal(param.data, np.zeros((2, 3)))
    # The stored array is a view of the assigned one, not a copy.
    np.testing.assert_array_equal(np.asarray(data), np.zeros((2, 3)))


def test_parameter_built_from_matrix_is_plain_ndarray():
    param = Parameter(np.asmatrix(np.ones((2, 3))))

    assert type(param.data) is np.ndarray
    assert type(param.grad) is np.ndarray
    assert param.shape == (2, 3)


# ---------------------------------------------------------------------------
# Linear
# ---------------------------------------------------------------------------

LINEAR_SHAPES = [
    pytest.param((5, 4, 3), id="5x4_to_3"),
    pytest.param((1, 7, 2), id="single_row"),
    pytest.param((0, 4, 3), id="empty_batch"),
    pytest.param((3, 0, 2), id="no_features"),
    pytest.param((3, 4, 0), id="no_outputs"),
]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", LINEAR_SHAPES)
def test_linear_matches_reference(shape, dtype, bias):
    n_rows, n_in, n_out = shape
    layer = Linear(n_in, n_out, bias=bias, dtype=dtype, rng=1)
    if bias:
        layer.bias.data[...] = standard_normal(n_out, dtype, seed=2)
    x = standard_normal((n_rows, n_in), dtype, seed=3)
    dy = standard_normal((n_rows, n_out), dtype, seed=4)
    bias_data = layer.bias.data if bias else None

    y = layer.forward(x)
    dx = layer.backward(dy)

    expected_dx, expected_dweight, expected_dbias = reference.linear_backward(x, layer.weight.data, dy)
    np.testing.assert_allclose(y, reference.linear_forward(x, layer.weight.data, bias_data), **TOLERANCE[dtype])
    np.testing.assert_allclose(dx, expected_dx, **TOLERANCE[dtype])
    np.testing.assert_allclose(layer.weight.grad, expected_dweight, **TOLERANCE[dtype])
    if bias:
        np.testing.assert_allclose(layer.bias.grad, expected_dbias, **TOLERANCE[dtype])
    assert y.dtype == dtype
    assert dx.dtype == dtype


def test_linear_backward_without_dx():
    layer = Linear(4, 3, dtype=np.float64, rng=0)
    x = standard_normal((6, 4), np.float64)
    dy = standard_normal((6, 3), np.float64, seed=1)
    layer.forward(x)

    dx = layer.backward(dy, need_dx=False)

    _, expected_dweight, expected_dbias = reference.linear_backward(x, layer.weight.data, dy)
    assert dx is None
    np.testing.assert_allclose(layer.weight.grad, expected_dweight, **TOLERANCE[np.float64])
    np.testing.assert_allclose(layer.bias.grad, expected_dbias, **TOLERANCE[np.float64])


def test_linear_backward_overwrites_grad():
    layer = Linear(3, 2, dtype=np.float64, rng=0)
    x = standard_normal((4, 3), np.float64)
    dy = standard_normal((4, 2), np.float64, seed=1)
    layer.forward(x)

    layer.backward(dy)
    first = layer.weight.grad.copy()
    layer.backward(dy)

    np.testing.assert_array_equal(layer.weight.grad, first)


def test_linear_does_not_modify_inputs():
    layer = Linear(3, 2, rng=0)
    x = standard_normal((4, 3), np.float32)
    dy = standard_normal((4, 2), np.float32, seed=1)
    x_before, dy_before = x.copy(), dy.copy()

    layer.forward(x)
    layer.backward(dy)

    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(dy, dy_before)


def test_linear_converts_float64_input_to_float32():
    layer = Linear(3, 2, dtype=np.float32, rng=0)
    x = standard_normal((4, 3), np.float64)

    y = layer.forward(x)

    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, layer.predict(x.astype(np.float32)))


def test_linear_accepts_integer_input():
    layer = Linear(2, 2, dtype=np.float64, rng=0)

    y = layer.forward(np.array([[1, 2]]))

    np.testing.assert_allclose(y, np.array([[1.0, 2.0]]) @ layer.weight.data, rtol=1e-15)


def test_linear_accepts_non_contiguous_input():
    layer = Linear(4, 2, dtype=np.float64, rng=0)
    x = standard_normal((3, 8), np.float64)[:, ::2]

    y = layer.forward(x)

    expected = reference.linear_forward(x, layer.weight.data, layer.bias.data)
    assert not x.flags.c_contiguous
    np.testing.assert_allclose(y, expected, **TOLERANCE[np.float64])


@pytest.mark.parametrize(
    "x_shape",
    [pytest.param((5, 3), id="narrow"), pytest.param((5, 5), id="wide"), pytest.param((4,), id="1d"),
     pytest.param((2, 2, 4), id="3d")],
)
def test_linear_rejects_wrong_shape(x_shape):
    layer = Linear(4, 2)

    with pytest.raises(ValueError, match=r"expects x of shape \(B, 4\)"):
        layer.forward(np.zeros(x_shape, dtype=np.float32))


def test_linear_rejects_complex_input():
    with pytest.raises(TypeError, match="complex"):
        Linear(2, 2).forward(np.ones((1, 2), dtype=np.complex64))


def test_linear_rejects_wrong_dy_shape():
    layer = Linear(4, 2)
    layer.forward(np.zeros((5, 4), dtype=np.float32))

    with pytest.raises(ValueError, match=r"dy must have the shape \(5, 2\)"):
        layer.backward(np.zeros((5, 3), dtype=np.float32))


def test_linear_backward_uses_last_batch():
    layer = Linear(4, 2)
    layer.forward(np.zeros((8, 4), dtype=np.float32))
    layer.forward(np.zeros((3, 4), dtype=np.float32))

    with pytest.raises(ValueError, match=r"shape \(3, 2\) of the last forward"):
        layer.backward(np.zeros((8, 2), dtype=np.float32))


@pytest.mark.parametrize(
    "layer",
    [pytest.param(Linear(3, 2), id="linear"), pytest.param(ReLU(), id="relu"),
     pytest.param(Sigmoid(), id="sigmoid"), pytest.param(Tanh(), id="tanh")],
)
def test_backward_before_forward_raises(layer):
    with pytest.raises(RuntimeError, match="backward was called before forward"):
        layer.backward(np.zeros((2, 2), dtype=np.float32))


def test_loss_backward_before_forward_raises():
    with pytest.raises(RuntimeError, match="backward was called before forward"):
        SoftmaxCrossEntropy().backward()


def test_sequential_backward_before_forward_raises():
    model = mlp([3, 4, 2], rng=0)

    with pytest.raises(RuntimeError, match="backward was called before forward"):
        model.backward(np.zeros((2, 2), dtype=np.float32))


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        pytest.param(dict(in_features=-1, out_features=2), ValueError, "in_features must be >= 0", id="negative"),
        pytest.param(dict(in_features=2.0, out_features=2), TypeError, "in_features must be an int", id="float_size"),
        pytest.param(dict(in_features=2, out_features=2, init="xavier"), ValueError, "init must be", id="init"),
        pytest.param(dict(in_features=2, out_features=2, dtype=np.float16), ValueError, "float32 or float64", id="float16"),
        pytest.param(dict(in_features=2, out_features=2, rng="seed"), TypeError, "rng must be", id="rng"),
        pytest.param(dict(in_features=2, out_features=3, rng=-1), ValueError,
                     "rng must be a non-negative int seed, got -1", id="negative_seed"),
        pytest.param(dict(in_features=2, out_features=3, rng=np.int64(-5)), ValueError,
                     "rng must be a non-negative int seed, got -5", id="negative_numpy_seed"),
        pytest.param(dict(in_features=2, out_features=3, dtype=None), TypeError,
                     "dtype must be float32 or float64, got None", id="dtype_none"),
    ],
)
def test_linear_rejects_invalid_arguments(arguments, error, message):
    with pytest.raises(error, match=message):
        Linear(**arguments)


def test_mlp_rejects_negative_seed():
    with pytest.raises(ValueError, match="rng must be a non-negative int seed"):
        mlp([2, 3], rng=-1)


# ---------------------------------------------------------------------------
# Replacing the parameters of a Linear layer
# ---------------------------------------------------------------------------


def test_linear_accepts_matching_weight_and_bias():
    layer = Linear(3, 2, dtype=np.float64, rng=0)
    weight = Parameter(np.arange(6, dtype=np.float64).reshape(3, 2))
    bias = Parameter(np.array([0.5, -0.5]))
    x = standard_normal((4, 3), np.float64)

    layer.weight = weight
    layer.bias = bias
    y = layer.forward(x)

    assert layer.weight is weight
    assert layer.bias is bias
    assert layer.parameters() == [weight, bias]
    np.testing.assert_allclose(y, x @ weight.data + bias.data, **TOLERANCE[np.float64])


@pytest.mark.parametrize(
    "name, value, error, message",
    [
        pytest.param("weight", Parameter(np.ones((3, 5), np.float32)), ValueError,
                     r"Linear.weight must be a Parameter of shape \(400, 800\) and dtype float32, "
                     r"got shape \(3, 5\) and dtype float32", id="weight_shape"),
        pytest.param("weight", Parameter(np.ones((800, 400), np.float32)), ValueError,
                     r"got shape \(800, 400\)", id="weight_transposed"),
        pytest.param("weight", Parameter(np.ones((400, 800), np.float64)), ValueError,
                     r"dtype float32, got shape \(400, 800\) and dtype float64", id="weight_dtype"),
        pytest.param("weight", np.ones((400, 800), np.float32), TypeError,
                     "Linear.weight must be a Parameter, got ndarray", id="weight_array"),
        pytest.param("weight", None, TypeError,
                     "Linear.weight must be a Parameter, got NoneType", id="weight_none"),
        pytest.param("bias", Parameter(np.ones(799, np.float32)), ValueError,
                     r"Linear.bias must be a Parameter of shape \(800,\) and dtype float32, "
                     r"got shape \(799,\)", id="bias_shape"),
        pytest.param("bias", Parameter(np.ones((1, 800), np.float32)), ValueError,
                     r"got shape \(1, 800\)", id="bias_2d"),
        pytest.param("bias", Parameter(np.ones(800, np.float64)), ValueError,
                     "and dtype float64", id="bias_dtype"),
        pytest.param("bias", None, ValueError,
                     "bias cannot be set to None on a layer built with bias=True", id="bias_none"),
    ],
)
def test_linear_rejects_invalid_parameter(name, value, error, message):
    # The compiled kernels trust these shapes, so a mismatch must never reach them.
    layer = Linear(400, 800, rng=0)
    before = getattr(layer, name)

    with pytest.raises(error, match=message):
        setattr(layer, name, value)

    assert getattr(layer, name) is before


def test_linear_without_bias_cannot_get_one():
    layer = Linear(3, 2, bias=False, rng=0)

    with pytest.raises(ValueError, match="built with bias=False cannot get a bias"):
        layer.bias = Parameter(np.zeros(2, dtype=np.float32))
    layer.bias = None

    assert layer.bias is None
    assert len(layer.parameters()) == 1


@pytest.mark.parametrize(
    "name, value", [("in_features", 3), ("out_features", 2), ("dtype", np.float32)], ids=["in", "out", "dtype"]
)
def test_linear_sizes_are_read_only(name, value):
    layer = Linear(3, 2, rng=0)

    with pytest.raises(AttributeError):
        setattr(layer, name, 5000)

    assert getattr(layer, name) == value
    assert layer.weight.shape == (3, 2)


# ---------------------------------------------------------------------------
# Initialization and seeds
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "init, bound",
    [pytest.param("he", math.sqrt(6 / 300), id="he"), pytest.param("glorot", math.sqrt(6 / 500), id="glorot")],
)
def test_linear_uniform_initialization(init, bound):
    layer = Linear(300, 200, init=init, dtype=np.float64, rng=0)
    weight = layer.weight.data

    assert np.abs(weight).max() <= bound
    assert np.abs(weight).max() > 0.99 * bound
    # The mean of |U(-bound, bound)| is bound / 2.
    assert abs(np.abs(weight).mean() - bound / 2) < 0.01 * bound
    assert not layer.bias.data.any()


@pytest.mark.parametrize(
    "activation, bound",
    [pytest.param("relu", math.sqrt(6 / 50), id="relu_he"),
     pytest.param("tanh", math.sqrt(6 / 90), id="tanh_glorot"),
     pytest.param("sigmoid", math.sqrt(6 / 90), id="sigmoid_glorot")],
)
def test_mlp_initialization_follows_activation(activation, bound):
    model = mlp([50, 40, 40], activation=activation, dtype=np.float64, rng=0)
    first_weight = model.layers[0].weight.data

    assert np.abs(first_weight).max() <= bound
    assert np.abs(first_weight).max() > 0.95 * bound


def test_same_seed_gives_same_weights():
    first = mlp([5, 7, 3], rng=42)
    second = mlp([5, 7, 3], rng=np.random.default_rng(42))

    for a, b in zip(first.parameters(), second.parameters()):
        assert a.data.tobytes() == b.data.tobytes()


def test_different_seeds_give_different_weights():
    first = mlp([5, 7, 3], rng=1)
    second = mlp([5, 7, 3], rng=2)

    assert not np.array_equal(first.layers[0].weight.data, second.layers[0].weight.data)


def test_float32_weights_are_rounded_float64_weights():
    single = Linear(6, 4, dtype=np.float32, rng=3)
    double = Linear(6, 4, dtype=np.float64, rng=3)

    np.testing.assert_array_equal(single.weight.data, double.weight.data.astype(np.float32))


def test_layers_of_mlp_draw_different_weights():
    model = mlp([4, 4, 4], rng=0)

    assert not np.array_equal(model.layers[0].weight.data, model.layers[2].weight.data)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_same_seed_trains_bitwise_identically(dtype):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x, labels = make_batch(32, 6, 3, dtype)

    def train():
        model = mlp([6, 16, 3], dtype=dtype, rng=7)
        loss = SoftmaxCrossEntropy()
        optimizer = Adam(model.parameters(), lr=0.01)
        for _ in range(5):
            train_step(model, loss, optimizer, x, labels)
        return model

    with threadpoolctl.threadpool_limits(1):
        first = train()
        second = train()

    for a, b in zip(first.parameters(), second.parameters()):
        assert a.data.tobytes() == b.data.tobytes()


# ---------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize(
    "shape", [pytest.param((4, 5), id="4x5"), pytest.param((0, 3), id="empty"), pytest.param((2, 3, 2), id="3d")]
)
def test_activation_matches_reference(name, dtype, shape):
    layer = ACTIVATION_CLASSES[name]()
    forward, backward = ACTIVATION_REFERENCE[name]
    x = 3 * standard_normal(shape, dtype)
    dy = standard_normal(shape, dtype, seed=1)

    y = layer.forward(x)
    dx = layer.backward(dy)

    np.testing.assert_allclose(y, forward(x), **TOLERANCE[dtype])
    np.testing.assert_allclose(dx, backward(forward(x), dy), **TOLERANCE[dtype])
    assert y.dtype == dtype
    assert dx.dtype == dtype


def test_activation_converts_integer_input_to_float64():
    y = ReLU().forward(np.array([[-1, 2]]))

    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, [[0.0, 2.0]])


def test_activation_rejects_wrong_dy_shape():
    layer = Tanh()
    layer.forward(np.zeros((3, 2), dtype=np.float32))

    with pytest.raises(ValueError, match=r"dy must have the shape \(3, 2\)"):
        layer.backward(np.zeros((2, 3), dtype=np.float32))


def test_activation_forward_on_own_output():
    layer = Sigmoid()
    x = standard_normal((3, 4), np.float64)

    twice = layer.forward(layer.forward(x))

    np.testing.assert_allclose(twice, reference.sigmoid_forward(reference.sigmoid_forward(x)), rtol=1e-12)


def test_activation_predict_in_place():
    layer = ReLU()
    x = np.array([[-1.0, 2.0]])

    y = layer.predict(x, out=x)

    assert y is x
    np.testing.assert_array_equal(x, [[0.0, 2.0]])


# ---------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("target_kind", ["labels", "probabilities"])
def test_loss_matches_reference(dtype, reduction, target_kind):
    z = 2 * standard_normal((6, 4), dtype)
    if target_kind == "labels":
        targets = np.array([0, 3, 1, 1, 2, 0], dtype=np.int32)
    else:
        targets = np.random.default_rng(1).dirichlet(np.ones(4), size=6).astype(dtype)
    loss = SoftmaxCrossEntropy(reduction)

    value = loss.forward(z, targets)
    dz = loss.backward()

    expected_value, expected_dz = reference.softmax_cross_entropy(z, targets, reduction=reduction)
    np.testing.assert_allclose(value, expected_value, **TOLERANCE[dtype])
    np.testing.assert_allclose(dz, expected_dz, **TOLERANCE[dtype])
    if reduction == "none":
        assert value.dtype == dtype
    else:
        assert isinstance(value, float)


@pytest.mark.parametrize(
    "label_dtype", [np.int8, np.uint8, np.int16, np.uint32, np.int64, np.uint64], ids=lambda d: np.dtype(d).name
)
def test_loss_accepts_integer_label_dtypes(label_dtype):
    z = standard_normal((3, 5), np.float64)
    labels = np.array([4, 0, 2], dtype=label_dtype)

    value = SoftmaxCrossEntropy().forward(z, labels)

    expected, _ = reference.softmax_cross_entropy(z, labels.astype(np.int64))
    assert value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("label_dtype", [">i8", ">i4", ">u2", "<i8"], ids=["int64_be", "int32_be", "uint16_be", "int64_le"])
def test_loss_accepts_any_label_byte_order(label_dtype):
    z = standard_normal((3, 5), np.float64)
    labels = np.array([4, 0, 2], dtype=label_dtype)
    loss = SoftmaxCrossEntropy()

    value = loss.forward(z, labels)
    dz = loss.backward().copy()

    expected, expected_dz = reference.softmax_cross_entropy(z, np.array([4, 0, 2]))
    assert value == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(dz, expected_dz, **TOLERANCE[np.float64])
    assert labels.dtype == np.dtype(label_dtype)


def test_loss_byte_swapped_label_out_of_range():
    z = standard_normal((2, 3), np.float32)

    with pytest.raises(IndexError, match=r"targets\[1\] = 3"):
        SoftmaxCrossEntropy().forward(z, np.array([0, 3], dtype=">i8"))


def test_loss_reduction_can_change():
    z = standard_normal((4, 3), np.float64)
    labels = np.array([0, 2, 1, 1])
    loss = SoftmaxCrossEntropy()

    mean = loss.forward(z, labels)
    loss.reduction = "sum"
    total = loss.forward(z, labels)
    loss.reduction = "none"
    rows = loss.forward(z, labels)

    assert total == pytest.approx(4 * mean, rel=1e-12)
    assert rows.shape == (4,)
    assert rows.sum() == pytest.approx(total, rel=1e-12)


@pytest.mark.parametrize("value", ["average", None, 0, ["mean"]], ids=["average", "none_value", "int", "list"])
def test_loss_reduction_setter_validates(value):
    loss = SoftmaxCrossEntropy("sum")

    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum' or 'none'"):
        loss.reduction = value

    assert loss.reduction == "sum"


def test_loss_empty_batch_mean_is_nan():
    loss = SoftmaxCrossEntropy()

    value = loss.forward(np.zeros((0, 3), dtype=np.float32), np.zeros(0, dtype=np.int64))

    assert math.isnan(value)
    assert loss.backward().shape == (0, 3)


@pytest.mark.parametrize(
    "targets, error, message",
    [
        pytest.param(np.array([0, 3]), IndexError, r"targets\[1\] = 3", id="label_too_large"),
        pytest.param(np.array([-1, 0]), IndexError, r"targets\[0\] = -1", id="negative_label"),
        pytest.param(np.array([True, False]), TypeError, "bool", id="bool"),
        pytest.param(np.array([0.0, 1.0]), TypeError, "1-D array of dtype float64", id="float_labels"),
        pytest.param(np.array([0, 1, 2]), ValueError, "3 class indices but z has 2 rows", id="length"),
        pytest.param(np.zeros((2, 2)), ValueError, "shape of z", id="probability_shape"),
    ],
)
def test_loss_rejects_invalid_targets(targets, error, message):
    with pytest.raises(error, match=message):
        SoftmaxCrossEntropy().forward(np.zeros((2, 3), dtype=np.float32), targets)


def test_loss_rejects_1d_logits():
    with pytest.raises(ValueError, match="logits must be a 2-D array"):
        SoftmaxCrossEntropy().forward(np.zeros(3, dtype=np.float32), np.array([0]))


def test_loss_rejects_invalid_reduction():
    with pytest.raises(ValueError, match="reduction must be one of"):
        SoftmaxCrossEntropy("average")


# ---------------------------------------------------------------------------
# Sequential against the reference composition and finite differences
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_sequential_matches_reference(dtype, activation, reduction):
    model = mlp([5, 8, 6, 3], activation=activation, dtype=dtype, rng=0)
    for param in model.parameters():
        param.data[...] += standard_normal(param.shape, dtype, seed=9) * 0.1
    x, labels = make_batch(7, 5, 3, dtype)
    loss = SoftmaxCrossEntropy(reduction)

    value = loss.forward(model.forward(x), labels)
    dx = model.backward(loss.backward(), need_dx=True)

    expected_value, expected_logits, gradients, expected_dx = reference_pass(model, x, labels, reduction)
    assert value == pytest.approx(expected_value, rel=TOLERANCE[dtype]["rtol"] * 10)
    np.testing.assert_allclose(model.predict(x), expected_logits, **TOLERANCE[dtype])
    np.testing.assert_allclose(dx, expected_dx, **TOLERANCE[dtype])
    for param in model.parameters():
        np.testing.assert_allclose(param.grad, gradients[id(param)], **TOLERANCE[dtype])


def test_sequential_backward_skips_input_gradient_by_default():
    model = mlp([4, 5, 2], dtype=np.float64, rng=0)
    x, labels = make_batch(3, 4, 2, np.float64)
    loss = SoftmaxCrossEntropy()
    loss.forward(model.forward(x), labels)

    result = model.backward(loss.backward())

    _, _, gradients, _ = reference_pass(model, x, labels)
    assert result is None
    np.testing.assert_allclose(model.layers[0].weight.grad, gradients[id(model.layers[0].weight)], rtol=1e-12)


def test_sequential_with_leading_activation():
    model = Sequential(Tanh(), Linear(3, 2, dtype=np.float64, rng=0))
    x, labels = make_batch(4, 3, 2, np.float64)
    loss = SoftmaxCrossEntropy()
    loss.forward(model.forward(x), labels)

    dx = model.backward(loss.backward(), need_dx=True)

    _, _, gradients, expected_dx = reference_pass(model, x, labels)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(model.layers[1].weight.grad, gradients[id(model.layers[1].weight)], rtol=1e-12)


def loss_of(model, x, labels):
    value, _ = reference.softmax_cross_entropy(model.predict(x), labels, reduction="mean")
    return value


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_gradients_match_finite_differences(activation):
    model = mlp([3, 5, 4, 3], activation=activation, dtype=np.float64, rng=3)
    for param in model.parameters():
        param.data[...] += standard_normal(param.shape, np.float64, seed=5) * 0.2
    x, labels = make_batch(6, 3, 3, np.float64, seed=11)
    loss = SoftmaxCrossEntropy()
    loss.forward(model.forward(x), labels)
    model.backward(loss.backward())
    step = 1e-6

    for param in model.parameters():
        numeric = np.empty_like(param.data)
        for index in np.ndindex(param.shape):
            original = param.data[index]
            param.data[index] = original + step
            above = loss_of(model, x, labels)
            param.data[index] = original - step
            below = loss_of(model, x, labels)
            param.data[index] = original
            numeric[index] = (above - below) / (2 * step)
        np.testing.assert_allclose(param.grad, numeric, rtol=1e-5, atol=1e-8)


def test_float32_gradients_close_to_float64():
    model64 = mlp([4, 6, 3], activation="tanh", dtype=np.float64, rng=0)
    model32 = mlp([4, 6, 3], activation="tanh", dtype=np.float32, rng=0)
    for p32, p64 in zip(model32.parameters(), model64.parameters()):
        p64.data[...] = p32.data
    x, labels = make_batch(5, 4, 3, np.float64)

    for model, dtype in ((model32, np.float32), (model64, np.float64)):
        loss = SoftmaxCrossEntropy()
        loss.forward(model.forward(x.astype(dtype)), labels)
        model.backward(loss.backward())

    for p32, p64 in zip(model32.parameters(), model64.parameters()):
        np.testing.assert_allclose(p32.grad, p64.grad, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------
# Work buffers
# ---------------------------------------------------------------------------


def test_second_step_reuses_buffers():
    model = mlp([6, 16, 8, 3], rng=0)
    loss = SoftmaxCrossEntropy()
    x, labels = make_batch(10, 6, 3, np.float32)

    first_outputs = []
    h = x
    for layer in model.layers:
        h = layer.forward(h)
        first_outputs.append(h)
    loss.forward(h, labels)
    first_dz = loss.backward()
    first_dx = model.backward(first_dz, need_dx=True)
    first_grads = [param.grad for param in model.parameters()]

    second_outputs = []
    h = x
    for layer in model.layers:
        h = layer.forward(h)
        second_outputs.append(h)
    loss.forward(h, labels)
    second_dz = loss.backward()
    second_dx = model.backward(second_dz, need_dx=True)

    for first, second in zip(first_outputs, second_outputs):
        assert second is first
    assert second_dz is first_dz
    assert second_dx is first_dx
    for param, grad in zip(model.parameters(), first_grads):
        assert param.grad is grad


def test_returned_buffers_share_no_memory_between_layers():
    model = mlp([4, 4, 4, 4], rng=0)
    x, _ = make_batch(3, 4, 4, np.float32)

    outputs = []
    h = x
    for layer in model.layers:
        h = layer.forward(h)
        outputs.append(h)

    for i, first in enumerate(outputs):
        for second in outputs[i + 1:]:
            assert not np.shares_memory(first, second)


def test_buffers_kept_per_batch_size():
    layer = Linear(4, 2, rng=0)
    large = np.ones((8, 4), dtype=np.float32)
    small = np.ones((3, 4), dtype=np.float32)

    y_large = layer.forward(large)
    y_small = layer.forward(small)
    y_large_again = layer.forward(large)

    assert y_large_again is y_large
    assert y_small is not y_large


def test_buffer_cache_is_bounded():
    layer = ReLU()
    first = layer.forward(np.ones((1, 3), dtype=np.float32))
    for n_rows in range(2, MAX_CACHED_SHAPES + 2):
        layer.forward(np.ones((n_rows, 3), dtype=np.float32))

    again = layer.forward(np.ones((1, 3), dtype=np.float32))

    assert again is not first


def test_steady_training_step_allocates_no_arrays():
    n_rows, n_classes = 128, 10
    model = mlp([64, 256, 256, n_classes], dtype=np.float64, rng=0)
    loss = SoftmaxCrossEntropy()
    optimizer = Adam(model.parameters(), lr=1e-3)
    x, labels = make_batch(n_rows, 64, n_classes, np.float64)
    labels = labels.astype(np.intp)
    # The smallest array a step would allocate if buffers were not reused is
    # the (B, n_classes) gradient of the logits.
    smallest_array_bytes = n_rows * n_classes * 8
    for _ in range(2):
        train_step(model, loss, optimizer, x, labels)

    tracemalloc.start()
    try:
        # Check that NumPy reports its arrays to tracemalloc, so the test can fail.
        baseline = tracemalloc.get_traced_memory()[0]
        probe = np.empty((n_rows, n_classes))
        assert tracemalloc.get_traced_memory()[0] - baseline >= smallest_array_bytes
        del probe

        train_step(model, loss, optimizer, x, labels)
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(3):
            train_step(model, loss, optimizer, x, labels)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak - baseline < smallest_array_bytes
    assert current - baseline < smallest_array_bytes


# ---------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------


def test_predict_returns_fresh_array():
    model = mlp([4, 5, 3], rng=0)
    x, _ = make_batch(6, 4, 3, np.float32)

    logits = model.forward(x)
    predicted = model.predict(x)

    np.testing.assert_array_equal(predicted, logits)
    assert not np.shares_memory(predicted, logits)
    assert model.predict(x) is not predicted


def test_predict_does_not_disturb_training_state():
    model = mlp([4, 5, 3], dtype=np.float64, rng=0)
    x, labels = make_batch(6, 4, 3, np.float64)
    other, _ = make_batch(6, 4, 3, np.float64, seed=1)
    loss = SoftmaxCrossEntropy()

    loss.forward(model.forward(x), labels)
    model.predict(other)
    model.backward(loss.backward())

    _, _, gradients, _ = reference_pass(model, x, labels)
    for param in model.parameters():
        np.testing.assert_allclose(param.grad, gradients[id(param)], rtol=1e-12, atol=1e-15)


def test_predict_does_not_modify_input():
    model = Sequential(ReLU(), Linear(3, 2, rng=0), Tanh())
    x = np.array([[-1.0, 0.5, 2.0]], dtype=np.float32)
    before = x.copy()

    model.predict(x)

    np.testing.assert_array_equal(x, before)


class PassThrough:
    """A custom layer whose predict returns its input itself."""

    def forward(self, x):
        return x

    def backward(self, dy):
        return dy

    def parameters(self):
        return []

    def predict(self, x):
        return x


class SliceView(PassThrough):
    """A custom layer whose predict returns a view of its input."""

    def predict(self, x):
        return x[:, :]


class StoredOutput(PassThrough):
    """A custom layer whose predict returns an array that it keeps."""

    def __init__(self, values):
        self.values = values

    def predict(self, x):
        return self.values


@pytest.mark.parametrize("custom", [PassThrough, SliceView], ids=["same_object", "view"])
@pytest.mark.parametrize("activation", [ReLU, Sigmoid, Tanh], ids=["relu", "sigmoid", "tanh"])
def test_predict_after_custom_layer_keeps_input(custom, activation):
    model = Sequential(custom(), activation())
    x = np.array([[-1.0, 0.5, 2.0]], dtype=np.float32)
    before = x.copy()

    y = model.predict(x)

    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(y, activation().predict(before))
    assert not np.shares_memory(y, x)


def test_predict_keeps_array_stored_by_custom_layer():
    stored = np.array([[-1.0, 2.0]])
    model = Sequential(StoredOutput(stored), ReLU())

    y = model.predict(np.zeros((1, 2)))

    np.testing.assert_array_equal(stored, [[-1.0, 2.0]])
    np.testing.assert_array_equal(y, [[0.0, 2.0]])


def test_predict_in_nested_model_keeps_input():
    model = Sequential(Sequential(PassThrough()), ReLU())
    x = np.array([[-3.0, 1.0]])

    model.predict(x)

    np.testing.assert_array_equal(x, [[-3.0, 1.0]])


def test_concurrent_predict_matches_serial():
    model = mlp([16, 32, 4], activation="tanh", rng=0)
    batches = [make_batch(50, 16, 4, np.float32, seed=seed)[0] for seed in range(16)]
    expected = [model.predict(batch) for batch in batches]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(model.predict, batches * 4))

    for result, want in zip(results, expected * 4):
        np.testing.assert_array_equal(result, want)


# ---------------------------------------------------------------------------
# Sequential construction, mlp and train_step
# ---------------------------------------------------------------------------


def test_sequential_rejects_repeated_layer():
    relu = ReLU()

    with pytest.raises(ValueError, match=r"layers\[3\] is the same object as layers\[1\]"):
        Sequential(Linear(2, 2), relu, Linear(2, 2), relu)


def test_sequential_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match=r"layers\[2\] \(Linear\(5, 2.*takes 5 features, but layers\[0\].*outputs 4"):
        Sequential(Linear(3, 4), ReLU(), Linear(5, 2))


def test_sequential_rejects_mixed_dtypes():
    with pytest.raises(ValueError, match="one dtype, got float32, float64"):
        Sequential(Linear(3, 4, dtype=np.float32), Linear(4, 2, dtype=np.float64))


@pytest.mark.parametrize(
    "layers, error, message",
    [
        pytest.param((), ValueError, "at least one layer", id="empty"),
        pytest.param((Linear(2, 2), SoftmaxCrossEntropy()), TypeError, "is a loss", id="loss"),
        pytest.param((Linear(2, 2), "relu"), TypeError, r"layers\[1\] \(str\) is not a layer", id="string"),
    ],
)
def test_sequential_rejects_invalid_layers(layers, error, message):
    with pytest.raises(error, match=message):
        Sequential(*layers)


def test_sequential_properties():
    model = mlp([3, 4, 2], dtype=np.float64, rng=0)

    assert model.dtype == np.float64
    assert model.feature_sizes == (3, 2)
    assert len(model) == 3
    assert isinstance(model[1], ReLU)
    assert len(model.parameters()) == 4


def test_sequential_layers_are_read_only():
    model = mlp([3, 4, 2], rng=0)
    layers = model.layers

    with pytest.raises(AttributeError, match="Sequential.layers is read-only"):
        model.layers = (Linear(3, 2, rng=1),)
    with pytest.raises(AttributeError, match="Sequential.layers is read-only"):
        del model.layers

    assert model.layers is layers
    assert isinstance(model.layers, tuple)


def test_mlp_structure():
    model = mlp([3, 8, 8, 2], activation="sigmoid", rng=0)

    kinds = [type(layer).__name__ for layer in model.layers]

    assert kinds == ["Linear", "Sigmoid", "Linear", "Sigmoid", "Linear"]
    assert model.dtype == np.float32


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        pytest.param(dict(layer_sizes=[3]), ValueError, "at least the input and output", id="one_size"),
        pytest.param(dict(layer_sizes=[3, 0, 2]), ValueError, r"layer_sizes\[1\] must be positive", id="zero"),
        pytest.param(dict(layer_sizes=[3, 2.5]), TypeError, r"layer_sizes\[1\] must be an int", id="float"),
        pytest.param(dict(layer_sizes=[3, 2], activation="gelu"), ValueError, "activation must be", id="activation"),
        pytest.param(dict(layer_sizes=[3, 2], dtype=np.int32), ValueError, "float32 or float64", id="dtype"),
    ],
)
def test_mlp_rejects_invalid_arguments(arguments, error, message):
    with pytest.raises(error, match=message):
        mlp(**arguments)


@pytest.mark.parametrize(
    "make_optimizer",
    [pytest.param(lambda params: SGD(params, lr=0.5, momentum=0.9), id="sgd"),
     pytest.param(lambda params: Adam(params, lr=0.05), id="adam")],
)
def test_train_step_reduces_loss(make_optimizer):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 2)).astype(np.float32)
    labels = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    model = mlp([2, 16, 2], activation="tanh", rng=0)
    loss = SoftmaxCrossEntropy()
    optimizer = make_optimizer(model.parameters())

    first = train_step(model, loss, optimizer, x, labels)
    for _ in range(200):
        last = train_step(model, loss, optimizer, x, labels)

    assert isinstance(first, float)
    assert last < 0.5 * first


def test_train_step_rejects_unreduced_loss():
    model = mlp([2, 2], rng=0)

    with pytest.raises(ValueError, match="scalar loss"):
        train_step(model, SoftmaxCrossEntropy("none"), SGD(model.parameters(), lr=0.1),
                   np.zeros((1, 2), dtype=np.float32), np.array([0]))


def test_nested_sequential_checks_sizes():
    with pytest.raises(ValueError, match="takes 3 features"):
        Sequential(mlp([3, 4, 2], rng=0), Linear(3, 5))


def test_nested_sequential_matches_flat_model():
    flat = mlp([3, 4, 2, 5], activation="tanh", dtype=np.float64, rng=0)
    layers = flat.layers
    nested = Sequential(Sequential(*layers[:3]), *layers[3:])
    x, labels = make_batch(6, 3, 5, np.float64)
    loss = SoftmaxCrossEntropy()

    loss.forward(nested.forward(x), labels)
    result = nested.backward(loss.backward())

    _, _, gradients, _ = reference_pass(flat, x, labels)
    assert result is None
    assert nested.feature_sizes == (3, 5)
    for param in nested.parameters():
        np.testing.assert_allclose(param.grad, gradients[id(param)], **TOLERANCE[np.float64])
