"""Tests for nnback.optim: SGD and Adam against NumPy and PyTorch, state and validation."""

import math

import numpy as np
import pytest

from nnback.layers import Parameter
from nnback.optim import SGD, Adam

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]

# Relative and absolute tolerance per dtype for the compiled update against the
# NumPy formulas over several steps. The two evaluate the same formulas in the
# same dtype, so the differences come from operation order only.
TOLERANCE = {
    np.float32: dict(rtol=2e-6, atol=1e-7),
    np.float64: dict(rtol=1e-13, atol=1e-15),
}

# Against torch.optim, which orders a few operations differently (lerp for the
# first Adam moment).
TORCH_TOLERANCE = {
    np.float32: dict(rtol=1e-5, atol=1e-6),
    np.float64: dict(rtol=1e-12, atol=1e-14),
}

SHAPES = [(3, 4), (5,), (0, 2), (1,)]
N_STEPS = 6


def make_problem(dtype, seed=0):
    """Return Parameters of several shapes and a gradient sequence for each (step, param)."""
    rng = np.random.default_rng(seed)
    params = [Parameter(rng.standard_normal(shape).astype(dtype)) for shape in SHAPES]
    gradients = [
        [rng.standard_normal(shape).astype(dtype) for shape in SHAPES] for _ in range(N_STEPS)
    ]
    return params, gradients


def numpy_sgd(values, gradients, lr, momentum, nesterov, weight_decay):
    """Return the parameter values after SGD steps, computed with NumPy in the input dtype."""
    values = [v.copy() for v in values]
    velocity = [np.zeros_like(v) for v in values]
    for step_gradients in gradients:
        for index, grad in enumerate(step_gradients):
            value = values[index]
            dtype = value.dtype.type
            g = grad + dtype(weight_decay) * value if weight_decay else grad
            if momentum:
                velocity[index] = dtype(momentum) * velocity[index] + g
                if nesterov:
                    update = g + dtype(momentum) * velocity[index]
                else:
                    update = velocity[index]
            else:
                update = g
            values[index] = value - dtype(lr) * update
    return values


def numpy_adam(values, gradients, lr, betas, eps, weight_decay):
    """Return the parameter values after Adam steps, in the textbook form of the update."""
    beta1, beta2 = betas
    values = [v.copy() for v in values]
    first = [np.zeros_like(v) for v in values]
    second = [np.zeros_like(v) for v in values]
    for step, step_gradients in enumerate(gradients, start=1):
        for index, grad in enumerate(step_gradients):
            value = values[index]
            dtype = value.dtype.type
            g = grad + dtype(weight_decay) * value if weight_decay else grad
            first[index] = dtype(beta1) * first[index] + dtype(1 - beta1) * g
            second[index] = dtype(beta2) * second[index] + dtype(1 - beta2) * g * g
            m_hat_scale = lr / (1 - beta1**step)
            denominator = np.sqrt(second[index]) / dtype(math.sqrt(1 - beta2**step)) + dtype(eps)
            values[index] = value - dtype(m_hat_scale) * (first[index] / denominator)
    return values


def run_optimizer(optimizer, params, gradients):
    for step_gradients in gradients:
        for param, grad in zip(params, step_gradients):
            param.grad[...] = grad
        optimizer.step()
    return [param.data for param in params]


SGD_CASES = [
    pytest.param(dict(lr=0.1), id="plain"),
    pytest.param(dict(lr=0.05, weight_decay=0.01), id="weight_decay"),
    pytest.param(dict(lr=0.05, momentum=0.9), id="momentum"),
    pytest.param(dict(lr=0.05, momentum=0.9, nesterov=True), id="nesterov"),
    pytest.param(dict(lr=0.02, momentum=0.5, nesterov=True, weight_decay=0.1), id="nesterov_decay"),
]

ADAM_CASES = [
    pytest.param(dict(lr=1e-3), id="defaults"),
    pytest.param(dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6), id="custom_betas"),
    pytest.param(dict(lr=0.01, weight_decay=0.05), id="weight_decay"),
    pytest.param(dict(lr=0.01, betas=(0.0, 0.0)), id="zero_betas"),
]


# ---------------------------------------------------------------------------
# Update rules against NumPy
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("options", SGD_CASES)
def test_sgd_matches_numpy(dtype, options):
    params, gradients = make_problem(dtype)
    initial = [param.data.copy() for param in params]
    full = dict(momentum=0.0, nesterov=False, weight_decay=0.0) | options

    result = run_optimizer(SGD(params, **options), params, gradients)
    expected = numpy_sgd(initial, gradients, **full)

    for got, want in zip(result, expected):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("options", ADAM_CASES)
def test_adam_matches_numpy(dtype, options):
    params, gradients = make_problem(dtype)
    initial = [param.data.copy() for param in params]
    full = dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0) | options

    result = run_optimizer(Adam(params, **options), params, gradients)
    expected = numpy_adam(initial, gradients, **full)

    for got, want in zip(result, expected):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **TOLERANCE[dtype])


def test_sgd_first_step_hand_computed():
    param = Parameter(np.array([1.0, -2.0]))
    param.grad[...] = [0.5, 0.25]
    optimizer = SGD([param], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.5)

    optimizer.step()

    # g = grad + 0.5 * p = [1.0, -0.75] and v = g, so the update is g + 0.9 * v = 1.9 * g.
    np.testing.assert_allclose(param.data, [1.0 - 0.19, -2.0 + 0.1425], rtol=1e-15)


def test_adam_first_step_moves_by_lr():
    # After one step the bias-corrected update is lr * g / (|g| + eps'), about lr * sign(g).
    param = Parameter(np.array([0.0, 0.0, 0.0]))
    param.grad[...] = [3.0, -0.5, 1e-3]
    optimizer = Adam([param], lr=0.01, eps=1e-12)

    optimizer.step()

    np.testing.assert_allclose(param.data, [-0.01, 0.01, -0.01], rtol=1e-8)


# ---------------------------------------------------------------------------
# Update rules against PyTorch
# ---------------------------------------------------------------------------


def run_torch(torch, optimizer_class, initial, gradients, options):
    tensors = [torch.tensor(value, requires_grad=True) for value in initial]
    optimizer = optimizer_class(tensors, **options)
    for step_gradients in gradients:
        for tensor, grad in zip(tensors, step_gradients):
            tensor.grad = torch.tensor(grad)
        optimizer.step()
    return [tensor.detach().numpy() for tensor in tensors]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("options", SGD_CASES)
def test_sgd_matches_torch(dtype, options):
    torch = pytest.importorskip("torch")
    params, gradients = make_problem(dtype)
    initial = [param.data.copy() for param in params]

    result = run_optimizer(SGD(params, **options), params, gradients)
    expected = run_torch(torch, torch.optim.SGD, initial, gradients, options)

    for got, want in zip(result, expected):
        np.testing.assert_allclose(got, want, **TORCH_TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("options", ADAM_CASES)
def test_adam_matches_torch(dtype, options):
    torch = pytest.importorskip("torch")
    params, gradients = make_problem(dtype)
    initial = [param.data.copy() for param in params]

    result = run_optimizer(Adam(params, **options), params, gradients)
    expected = run_torch(torch, torch.optim.Adam, initial, gradients, options)

    for got, want in zip(result, expected):
        np.testing.assert_allclose(got, want, **TORCH_TOLERANCE[dtype])


# ---------------------------------------------------------------------------
# State, gradients and zero_grad
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_optimizer",
    [
        pytest.param(lambda params: SGD(params, lr=0.1), id="sgd"),
        pytest.param(lambda params: SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1), id="sgd_momentum"),
        pytest.param(lambda params: Adam(params, lr=0.1, weight_decay=0.1), id="adam"),
    ],
)
def test_step_leaves_grad_unchanged(make_optimizer):
    params, gradients = make_problem(np.float32)
    for param, grad in zip(params, gradients[0]):
        param.grad[...] = grad
    grad_objects = [param.grad for param in params]
    data_objects = [param.data for param in params]
    optimizer = make_optimizer(params)

    optimizer.step()
    optimizer.step()

    for param, grad, grad_object, data_object in zip(params, gradients[0], grad_objects, data_objects):
        assert param.grad is grad_object
        assert param.data is data_object
        np.testing.assert_array_equal(param.grad, grad)


def test_step_updates_data_in_place():
    data = np.ones((2, 3), dtype=np.float32)
    param = Parameter(data)
    param.grad[...] = 1.0

    SGD([param], lr=0.5).step()

    np.testing.assert_array_equal(data, np.full((2, 3), 0.5, dtype=np.float32))


def test_adam_counts_steps_and_keeps_moments():
    param = Parameter(np.array([1.0, 2.0]))
    param.grad[...] = [0.1, -0.2]
    optimizer = Adam([param], lr=0.01)

    optimizer.step()
    optimizer.step()

    assert optimizer.step_count == 2
    # m after two steps with a constant gradient g is (1 - 0.9**2) * g.
    np.testing.assert_allclose(optimizer.exp_avg[0], [0.019, -0.038], rtol=1e-12)
    np.testing.assert_allclose(optimizer.exp_avg_sq[0], 0.001999 * np.array([0.01, 0.04]), rtol=1e-12)


def test_sgd_keeps_velocity_between_steps():
    param = Parameter(np.array([0.0]))
    param.grad[...] = [1.0]
    optimizer = SGD([param], lr=1.0, momentum=0.5)

    optimizer.step()
    optimizer.step()

    # The velocities are v1 = 1 and v2 = 1.5, and the parameter moved by v1 + v2.
    np.testing.assert_array_equal(optimizer.velocity[0], [1.5])
    np.testing.assert_array_equal(param.data, [-2.5])


def test_sgd_without_momentum_has_no_velocity():
    optimizer = SGD([Parameter(np.zeros(3))], lr=0.1)

    assert optimizer.velocity == []


def test_zero_grad_fills_in_place():
    params, gradients = make_problem(np.float64)
    for param, grad in zip(params, gradients[0]):
        param.grad[...] = grad
    grad_objects = [param.grad for param in params]

    Adam(params).zero_grad()

    for param, grad_object in zip(params, grad_objects):
        assert param.grad is grad_object
        assert not param.grad.any()


def test_zero_learning_rate_keeps_parameters():
    params, gradients = make_problem(np.float64)
    initial = [param.data.copy() for param in params]

    run_optimizer(SGD(params, lr=0.0, momentum=0.9), params, gradients)

    for param, value in zip(params, initial):
        np.testing.assert_array_equal(param.data, value)


def test_zero_weight_decay_keeps_infinite_parameter():
    # weight_decay == 0 adds nothing, so 0 * inf does not turn the update into NaN.
    param = Parameter(np.array([np.inf, 1.0]))
    param.grad[...] = [1.0, 1.0]

    SGD([param], lr=0.5).step()

    np.testing.assert_array_equal(param.data, [np.inf, 0.5])


def test_lr_can_change_between_steps():
    param = Parameter(np.array([1.0]))
    param.grad[...] = [1.0]
    optimizer = SGD([param], lr=0.5)

    optimizer.step()
    optimizer.lr = 0.25
    optimizer.step()

    np.testing.assert_array_equal(param.data, [0.25])


def test_generator_of_params_accepted():
    params = [Parameter(np.zeros(2)), Parameter(np.zeros(3))]

    optimizer = Adam(param for param in params)

    assert optimizer.params == tuple(params)


# ---------------------------------------------------------------------------
# Hyperparameter validation
# ---------------------------------------------------------------------------


def one_param():
    return [Parameter(np.zeros(2))]


@pytest.mark.parametrize(
    "options, message",
    [
        pytest.param(dict(lr=-0.1), "lr must be >= 0", id="negative_lr"),
        pytest.param(dict(lr=float("nan")), "lr must be finite", id="nan_lr"),
        pytest.param(dict(lr=float("inf")), "lr must be finite", id="inf_lr"),
        pytest.param(dict(lr=0.1, momentum=-0.5), "momentum must be >= 0", id="negative_momentum"),
        pytest.param(dict(lr=0.1, momentum=1.0), "momentum must be .*< 1", id="momentum_one"),
        pytest.param(dict(lr=0.1, momentum=float("nan")), "momentum must be finite", id="nan_momentum"),
        pytest.param(dict(lr=0.1, nesterov=True), "nesterov=True requires momentum > 0", id="nesterov_without_momentum"),
        pytest.param(dict(lr=0.1, weight_decay=-1e-4), "weight_decay must be >= 0", id="negative_weight_decay"),
        pytest.param(dict(lr=0.1, weight_decay=float("inf")), "weight_decay must be finite", id="inf_weight_decay"),
    ],
)
def test_sgd_rejects_invalid_hyperparameters(options, message):
    with pytest.raises(ValueError, match=message):
        SGD(one_param(), **options)


@pytest.mark.parametrize(
    "options, message",
    [
        pytest.param(dict(lr=-1e-3), "lr must be >= 0", id="negative_lr"),
        pytest.param(dict(betas=(1.0, 0.999)), r"betas\[0\] must be .*< 1", id="beta1_one"),
        pytest.param(dict(betas=(-0.1, 0.999)), r"betas\[0\] must be >= 0", id="negative_beta1"),
        pytest.param(dict(betas=(0.9, 1.5)), r"betas\[1\] must be .*< 1", id="beta2_above_one"),
        pytest.param(dict(betas=(0.9, float("nan"))), r"betas\[1\] must be finite", id="nan_beta2"),
        pytest.param(dict(betas=(0.9,)), "betas must be a pair", id="one_beta"),
        pytest.param(dict(eps=0.0), "eps must be > 0", id="zero_eps"),
        pytest.param(dict(eps=-1e-8), "eps must be > 0", id="negative_eps"),
        pytest.param(dict(weight_decay=-0.1), "weight_decay must be >= 0", id="negative_weight_decay"),
    ],
)
def test_adam_rejects_invalid_hyperparameters(options, message):
    with pytest.raises(ValueError, match=message):
        Adam(one_param(), **options)


def test_error_names_the_value():
    with pytest.raises(ValueError, match="-0.5"):
        SGD(one_param(), lr=-0.5)


@pytest.mark.parametrize(
    "value",
    [pytest.param("0.1", id="string"), pytest.param(True, id="bool"), pytest.param(None, id="none")],
)
def test_non_numeric_lr_rejected(value):
    with pytest.raises(TypeError, match="lr must be a real number"):
        SGD(one_param(), lr=value)


def test_lr_setter_validates():
    optimizer = Adam(one_param())

    with pytest.raises(ValueError, match="lr must be >= 0"):
        optimizer.lr = -1.0


@pytest.mark.parametrize("optimizer_class", [SGD, Adam], ids=["sgd", "adam"])
def test_empty_params_rejected(optimizer_class):
    with pytest.raises(ValueError, match="params is empty"):
        optimizer_class([], lr=0.1)


def test_non_parameter_rejected():
    with pytest.raises(TypeError, match=r"params\[1\] must be a Parameter, got ndarray"):
        SGD([Parameter(np.zeros(1)), np.zeros(1)], lr=0.1)


def test_single_parameter_rejected():
    with pytest.raises(TypeError, match="got a single Parameter"):
        SGD(Parameter(np.zeros(1)), lr=0.1)


def test_duplicate_parameter_rejected():
    param = Parameter(np.zeros(1))

    with pytest.raises(ValueError, match=r"params\[1\] is the same Parameter as params\[0\]"):
        Adam([param, param])


def test_weight_decay_setter_validates():
    optimizer = SGD(one_param(), lr=0.1)

    optimizer.weight_decay = 0.5
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        optimizer.weight_decay = -0.5

    assert optimizer.weight_decay == 0.5


# ---------------------------------------------------------------------------
# Hyperparameters changed after construction
# ---------------------------------------------------------------------------


def test_sgd_momentum_enabled_later_matches_constructor():
    params, gradients = make_problem(np.float64)
    initial = [param.data.copy() for param in params]
    optimizer = SGD(params, lr=0.05)

    optimizer.momentum = 0.9
    run_optimizer(optimizer, params, gradients)

    expected = numpy_sgd(initial, gradients, lr=0.05, momentum=0.9, nesterov=False, weight_decay=0.0)
    assert len(optimizer.velocity) == len(params)
    for param, want in zip(params, expected):
        np.testing.assert_allclose(param.data, want, **TOLERANCE[np.float64])


def test_sgd_nesterov_enabled_later_matches_constructor():
    params, gradients = make_problem(np.float32)
    initial = [param.data.copy() for param in params]
    optimizer = SGD(params, lr=0.02)

    optimizer.momentum = 0.5
    optimizer.nesterov = True
    run_optimizer(optimizer, params, gradients)

    expected = numpy_sgd(initial, gradients, lr=0.02, momentum=0.5, nesterov=True, weight_decay=0.0)
    for param, want in zip(params, expected):
        np.testing.assert_allclose(param.data, want, **TOLERANCE[np.float32])


def test_sgd_momentum_change_keeps_velocity():
    param = Parameter(np.array([0.0]))
    param.grad[...] = [1.0]
    optimizer = SGD([param], lr=1.0, momentum=0.5)
    optimizer.step()
    velocity = optimizer.velocity[0]

    optimizer.momentum = 0.25
    optimizer.step()

    # v2 = 0.25 * v1 + g = 1.25, so the parameter moved by v1 + v2 = 2.25.
    assert optimizer.velocity[0] is velocity
    np.testing.assert_array_equal(velocity, [1.25])
    np.testing.assert_array_equal(param.data, [-2.25])


def test_sgd_momentum_zero_discards_velocity():
    param = Parameter(np.array([0.0]))
    param.grad[...] = [1.0]
    optimizer = SGD([param], lr=1.0, momentum=0.5)
    optimizer.step()

    optimizer.momentum = 0.0
    optimizer.step()
    optimizer.momentum = 0.5
    optimizer.step()

    # Steps of 1 (v1 = 1), 1 (plain SGD) and 1 (the velocity restarts at 0).
    assert len(optimizer.velocity) == 1
    np.testing.assert_array_equal(optimizer.velocity[0], [1.0])
    np.testing.assert_array_equal(param.data, [-3.0])


@pytest.mark.parametrize(
    "value, error, message",
    [
        pytest.param(1.0, ValueError, "momentum must be .*< 1", id="one"),
        pytest.param(-0.1, ValueError, "momentum must be >= 0", id="negative"),
        pytest.param(float("nan"), ValueError, "momentum must be finite", id="nan"),
        pytest.param("0.9", TypeError, "momentum must be a real number", id="string"),
    ],
)
def test_sgd_momentum_setter_validates(value, error, message):
    optimizer = SGD(one_param(), lr=0.1)

    with pytest.raises(error, match=message):
        optimizer.momentum = value

    assert optimizer.momentum == 0.0
    assert optimizer.velocity == []


def test_sgd_nesterov_stays_consistent_with_momentum():
    optimizer = SGD(one_param(), lr=0.1)

    with pytest.raises(ValueError, match="nesterov=True requires momentum > 0"):
        optimizer.nesterov = True
    with pytest.raises(TypeError, match="nesterov must be True or False, got int"):
        optimizer.nesterov = 1
    optimizer.momentum = 0.9
    optimizer.nesterov = True
    with pytest.raises(ValueError, match="momentum must be > 0 while nesterov is True"):
        optimizer.momentum = 0.0

    assert optimizer.momentum == 0.9
    assert optimizer.nesterov is True


@pytest.mark.parametrize(
    "name, value, error, message",
    [
        pytest.param("betas", (1.0, 0.999), ValueError, r"betas\[0\] must be .*< 1", id="beta1_one"),
        pytest.param("betas", (0.9, 1.0), ValueError, r"betas\[1\] must be .*< 1", id="beta2_one"),
        pytest.param("betas", 0.9, ValueError, "betas must be a pair", id="scalar_betas"),
        pytest.param("betas", (0.9, None), TypeError, r"betas\[1\] must be a real number", id="none_beta2"),
        pytest.param("eps", 0.0, ValueError, "eps must be > 0", id="zero_eps"),
        pytest.param("eps", float("inf"), ValueError, "eps must be finite", id="inf_eps"),
        pytest.param("step_count", -1, ValueError, "step_count must be >= 0, got -1", id="negative_steps"),
        pytest.param("step_count", 1.5, TypeError, "step_count must be an int", id="float_steps"),
    ],
)
def test_adam_setters_validate(name, value, error, message):
    optimizer = Adam(one_param())
    before = getattr(optimizer, name)

    with pytest.raises(error, match=message):
        setattr(optimizer, name, value)

    assert getattr(optimizer, name) == before


def test_adam_hyperparameters_changed_later_match_constructor():
    params, gradients = make_problem(np.float64)
    initial = [param.data.copy() for param in params]
    optimizer = Adam(params, lr=0.01)

    optimizer.betas = (0.8, 0.99)
    optimizer.eps = 1e-6
    run_optimizer(optimizer, params, gradients)

    expected = numpy_adam(initial, gradients, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.0)
    assert optimizer.betas == (0.8, 0.99)
    for param, want in zip(params, expected):
        np.testing.assert_allclose(param.data, want, **TOLERANCE[np.float64])


def test_params_are_read_only():
    # The optimizer state has one buffer per Parameter, of that Parameter's size.
    optimizer = SGD(one_param(), lr=0.1, momentum=0.9)

    with pytest.raises(AttributeError, match="Optimizer.params is read-only"):
        optimizer.params = [Parameter(np.zeros(1000))]
    with pytest.raises(TypeError):
        optimizer.params[0] = Parameter(np.zeros(1000))

    assert optimizer.params[0].shape == (2,)


@pytest.mark.parametrize("make_optimizer", [
    lambda params: SGD(params, lr=0.1, momentum=0.9),
    lambda params: Adam(params, lr=0.01),
], ids=["sgd-momentum", "adam"])
def test_pickled_training_state_keeps_training(make_optimizer):
    import pickle

    from nnback.layers import SoftmaxCrossEntropy, mlp
    from nnback.training import train_step

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4))
    labels = rng.integers(0, 3, 8)
    model = mlp([4, 5, 3], dtype=np.float64, rng=0)
    optimizer = make_optimizer(model.parameters())
    train_step(model, SoftmaxCrossEntropy(), optimizer, x, labels)

    copy_model, copy_optimizer = pickle.loads(pickle.dumps((model, optimizer)))
    before = [parameter.data.copy() for parameter in copy_model.parameters()]
    train_step(model, SoftmaxCrossEntropy(), optimizer, x, labels)
    train_step(copy_model, SoftmaxCrossEntropy(), copy_optimizer, x, labels)

    for original, copied, old in zip(model.parameters(), copy_model.parameters(), before):
        assert not np.array_equal(copied.data, old)
        np.testing.assert_array_equal(copied.data, original.data)
