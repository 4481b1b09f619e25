"""Forward values and autograd gradients of torch.nn.functional against nnback.functional.

PyTorch stores a linear layer's weight as (n_outputs, n_features), the transpose
of nnback's (n_features, n_outputs). Inputs are finite here: PyTorch passes the
gradient through ReLU where y is NaN, and gives NaN for probability targets of 0
at logits of -inf, where nnback documents other values.
"""

import numpy as np
import pytest

from nnback import functional

torch = pytest.importorskip("torch")

DTYPES = [np.float32, np.float64]
TORCH_DTYPES = {np.float32: torch.float32, np.float64: torch.float64}
TOLERANCE = {
    np.float32: dict(rtol=2e-5, atol=2e-6),
    np.float64: dict(rtol=1e-11, atol=1e-12),
}
REDUCTIONS = ["mean", "sum", "none"]


def dtype_id(dtype):
    return np.dtype(dtype).name


@pytest.fixture
def rng():
    return np.random.default_rng(31415)


def leaf(array):
    """Return a torch leaf tensor that records gradients, sharing no memory with ``array``."""
    return torch.tensor(np.array(array), requires_grad=True)


def assert_matches(actual, expected_tensor, dtype):
    expected = expected_tensor.detach().numpy()
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", [(6, 4, 3), (1, 5, 7), (9, 2, 1)], ids=lambda shape: "x".join(map(str, shape)))
def test_linear_matches_torch(rng, dtype, shape):
    n_rows, n_features, n_outputs = shape
    x = rng.standard_normal((n_rows, n_features)).astype(dtype)
    weight = rng.standard_normal((n_features, n_outputs)).astype(dtype)
    bias = rng.standard_normal(n_outputs).astype(dtype)
    dy = rng.standard_normal((n_rows, n_outputs)).astype(dtype)
    x_t, weight_t, bias_t = leaf(x), leaf(weight.T), leaf(bias)

    y_t = torch.nn.functional.linear(x_t, weight_t, bias_t)
    y_t.backward(torch.from_numpy(dy))
    y = functional.linear_forward(x, weight, bias)
    dx, dweight, dbias = functional.linear_backward(x, weight, dy)

    assert_matches(y, y_t, dtype)
    assert_matches(dx, x_t.grad, dtype)
    assert_matches(dweight, weight_t.grad.T, dtype)
    assert_matches(dbias, bias_t.grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu"])
def test_activation_matches_torch(rng, name, dtype):
    pytest.importorskip("nnback._activations")
    x = (4 * rng.standard_normal((5, 8))).astype(dtype)
    x[0, :6] = [0.0, -0.0, 30.0, -30.0, 1e4, -1e4]
    dy = rng.standard_normal((5, 8)).astype(dtype)
    x_t = leaf(x)

    y_t = getattr(torch, name)(x_t)
    y_t.backward(torch.from_numpy(dy))
    y = getattr(functional, f"{name}_forward")(x)
    dx = getattr(functional, f"{name}_backward")(y, dy)

    assert_matches(y, y_t, dtype)
    assert_matches(dx, x_t.grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("function", ["softmax", "log_softmax"])
def test_softmax_matches_torch(rng, function, dtype):
    z = (5 * rng.standard_normal((6, 9))).astype(dtype)
    z[0] = [1e4, 0.0, -1e4, 3.0, -np.inf, 2.0, 1.0, 0.0, -1.0]

    expected = getattr(torch.nn.functional, function)(torch.from_numpy(z), dim=1)

    assert_matches(getattr(functional, function)(z), expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("targets", ["indices", "probabilities"])
def test_cross_entropy_matches_torch(rng, targets, reduction, dtype):
    z = (3 * rng.standard_normal((7, 5))).astype(dtype)
    if targets == "indices":
        target_array = rng.integers(0, 5, size=7)
        target_t = torch.from_numpy(target_array)
    else:
        # Rows that do not sum to 1 test the true gradient p * sum(t) - t.
        target_array = rng.random((7, 5)).astype(dtype)
        target_t = torch.from_numpy(target_array)
    z_t = leaf(z)

    loss_t = torch.nn.functional.cross_entropy(z_t, target_t, reduction=reduction)
    # For "none", the gradient is that of the sum of the row losses.
    loss_t.sum().backward()
    loss, dz = functional.softmax_cross_entropy(z, target_array, reduction=reduction)

    if reduction == "none":
        assert_matches(loss, loss_t, dtype)
    else:
        assert isinstance(loss, float)
        np.testing.assert_allclose(loss, loss_t.item(), **TOLERANCE[dtype])
    assert_matches(dz, z_t.grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_cross_entropy_empty_batch_mean_matches_torch(dtype):
    z = np.empty((0, 4), dtype=dtype)
    labels = np.empty(0, dtype=np.int64)

    expected = torch.nn.functional.cross_entropy(torch.from_numpy(z), torch.from_numpy(labels))
    loss, dz = functional.softmax_cross_entropy(z, labels)

    assert np.isnan(expected.item())
    assert np.isnan(loss)
    assert dz.shape == (0, 4)
