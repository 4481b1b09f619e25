"""Invalid and unusual arguments across the public API, as a table of cases.

Each case calls one public function with one bad argument and expects an
exception of the given type whose message matches a pattern that names the
argument, or a result checked against a NumPy formula. The functional cases run
against both ``nnback.functional`` and ``nnback.reference``, which share their
argument checks.
"""

import os
import re

import numpy as np
import pytest

from nnback import (
    SGD,
    Adam,
    Linear,
    Parameter,
    ReLU,
    Sequential,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
    functional,
    load,
    mlp,
    reference,
    set_num_threads,
    train_step,
)

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

MODULES = {"functional": functional, "reference": reference}

RAGGED = [[1.0, 2.0, 3.0], [4.0]]


def ramp(*shape):
    size = int(np.prod(shape))
    return np.linspace(-1.3, 1.7, size).reshape(shape)


def labels():
    return np.array([0, 1, 0, 1, 1])


def setup_step():
    model = mlp([3, 4, 2], rng=0)
    return model, SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.1)


# ---------------------------------------------------------------------------
# Functional and reference
# ---------------------------------------------------------------------------

# (id, call(module), exception type, message pattern)
FUNCTIONAL_ERRORS = [
    ("linear_forward_ragged_x", lambda m: m.linear_forward(RAGGED, ramp(3, 2)),
     ValueError, r"^x cannot be converted to a NumPy array: .*inhomogeneous"),
    ("linear_forward_ragged_bias", lambda m: m.linear_forward(ramp(2, 3), ramp(3, 2), [[1.0], []]),
     ValueError, r"^bias cannot be converted"),
    ("linear_backward_ragged_dy", lambda m: m.linear_backward(ramp(2, 3), ramp(3, 2), RAGGED),
     ValueError, r"^dy cannot be converted"),
    ("sigmoid_forward_ragged_x", lambda m: m.sigmoid_forward(RAGGED),
     ValueError, r"^x cannot be converted"),
    ("relu_backward_ragged_y", lambda m: m.relu_backward(RAGGED, ramp(2, 3)),
     ValueError, r"^y cannot be converted"),
    ("tanh_backward_ragged_dy", lambda m: m.tanh_backward(ramp(2, 3), RAGGED),
     ValueError, r"^dy cannot be converted"),
    ("softmax_ragged_z", lambda m: m.softmax(RAGGED),
     ValueError, r"^z cannot be converted"),
    ("log_softmax_ragged_z", lambda m: m.log_softmax(RAGGED),
     ValueError, r"^z cannot be converted"),
    ("cross_entropy_ragged_z", lambda m: m.softmax_cross_entropy(RAGGED, [0, 1]),
     ValueError, r"^z cannot be converted"),
    ("cross_entropy_ragged_targets", lambda m: m.softmax_cross_entropy(ramp(3, 4), [[0], [1, 2], [0]]),
     ValueError, r"^targets cannot be converted"),
    ("cross_entropy_integer_one_hot",
     lambda m: m.softmax_cross_entropy(ramp(3, 4), np.eye(3, 4, dtype=np.int64)),
     ValueError, r"got shape \(3, 4\); pass probability \(one-hot\) targets as a floating-point"),
]


@pytest.mark.parametrize("module_name", list(MODULES))
@pytest.mark.parametrize(
    "call, error, pattern",
    [case[1:] for case in FUNCTIONAL_ERRORS],
    ids=[case[0] for case in FUNCTIONAL_ERRORS],
)
def test_functional_rejects(module_name, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(MODULES[module_name])


ELEMENTWISE_FORWARD = {
    "sigmoid_forward": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh_forward": np.tanh,
    "relu_forward": lambda x: np.maximum(x, 0.0),
}


@pytest.mark.parametrize("module_name", list(MODULES))
@pytest.mark.parametrize("name", list(ELEMENTWISE_FORWARD))
def test_elementwise_forward_into_matrix_out(module_name, name):
    x = ramp(2, 3)
    out = np.matrix(np.zeros((2, 3)))

    result = getattr(MODULES[module_name], name)(x, out=out)

    assert result is out
    np.testing.assert_allclose(np.asarray(out), ELEMENTWISE_FORWARD[name](x), rtol=1e-12)


@pytest.mark.parametrize("module_name", list(MODULES))
def test_relu_backward_into_matrix_out(module_name):
    y = ramp(2, 3)
    dy = np.full((2, 3), 2.0)
    out = np.matrix(np.zeros((2, 3)))

    result = MODULES[module_name].relu_backward(y, dy, out=out)

    assert result is out
    np.testing.assert_array_equal(np.asarray(out), np.where(y > 0, 2.0, 0.0))


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------

ACTIVATIONS = {
    ReLU: lambda x: np.maximum(x, 0.0),
    Sigmoid: lambda x: 1.0 / (1.0 + np.exp(-x)),
    Tanh: np.tanh,
}


@pytest.mark.parametrize("layer_type", list(ACTIVATIONS), ids=lambda t: t.__name__)
def test_activation_forward_matrix_input(layer_type):
    x = ramp(2, 3)

    y = layer_type().forward(np.matrix(x))

    assert type(y) is np.ndarray
    np.testing.assert_allclose(y, ACTIVATIONS[layer_type](x), rtol=1e-12)


@pytest.mark.parametrize("layer_type", list(ACTIVATIONS), ids=lambda t: t.__name__)
def test_activation_predict_matrix_input(layer_type):
    x = ramp(2, 3)

    y = layer_type().predict(np.matrix(x))

    np.testing.assert_allclose(np.asarray(y), ACTIVATIONS[layer_type](x), rtol=1e-12)


def test_relu_backward_matrix_dy():
    layer = ReLU()
    x = ramp(2, 3)
    layer.forward(x)

    dx = layer.backward(np.matrix(np.full((2, 3), 3.0)))

    np.testing.assert_array_equal(dx, np.where(x > 0, 3.0, 0.0))


def test_activation_forward_masked_input_uses_data():
    x = ramp(2, 3)
    masked = np.ma.masked_array(x, mask=[[1, 0, 0], [0, 0, 0]])

    y = Tanh().forward(masked)

    np.testing.assert_allclose(y, np.tanh(x), rtol=1e-12)


# (id, call, exception type, message pattern)
LAYER_ERRORS = [
    ("linear_forward_ragged", lambda: Linear(3, 2, rng=0).forward(RAGGED),
     ValueError, r"^x cannot be converted"),
    ("loss_ragged_logits", lambda: SoftmaxCrossEntropy().forward([[0.0], [1.0, 2.0]], [0, 0]),
     ValueError, r"^logits cannot be converted"),
    ("loss_ragged_targets", lambda: SoftmaxCrossEntropy().forward(ramp(3, 4), [[0], [1, 2], [0]]),
     ValueError, r"^targets cannot be converted"),
    ("sequential_of_class", lambda: Sequential(ReLU),
     TypeError, r"layers\[0\] is the class ReLU, not a layer: pass an instance such as ReLU\(\)"),
    ("mlp_int_sizes", lambda: mlp(5),
     TypeError, r"layer_sizes must be a sequence of ints .* got int"),
    ("mlp_none_sizes", lambda: mlp(None),
     TypeError, r"layer_sizes must be a sequence of ints .* got NoneType"),
]


@pytest.mark.parametrize(
    "call, error, pattern", [case[1:] for case in LAYER_ERRORS], ids=[case[0] for case in LAYER_ERRORS]
)
def test_layers_reject(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


# ---------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------

OPTIMIZER_ERRORS = [
    ("sgd_params_none", lambda: SGD(None, lr=0.1),
     TypeError, r"params must be an iterable of Parameter, got NoneType: pass \[param\]"),
    ("adam_params_int", lambda: Adam(3),
     TypeError, r"params must be an iterable of Parameter, got int"),
    ("sgd_params_layer", lambda: SGD(Linear(3, 2, rng=0), lr=0.1),
     TypeError, r"got Linear: pass model.parameters\(\)"),
    ("adam_betas_set", lambda: Adam(Linear(3, 2, rng=0).parameters(), betas={0.9, 0.99}),
     ValueError, r"betas must be an ordered pair"),
]


@pytest.mark.parametrize(
    "call, error, pattern",
    [case[1:] for case in OPTIMIZER_ERRORS],
    ids=[case[0] for case in OPTIMIZER_ERRORS],
)
def test_optimizers_reject(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


# ---------------------------------------------------------------------------
# train_step
# ---------------------------------------------------------------------------

def _step_with(replace):
    """Return a call of train_step whose arguments are changed by ``replace``."""
    def call():
        model, loss, optimizer = setup_step()
        arguments = replace(model, loss, optimizer, ramp(5, 3), labels())
        return train_step(*arguments)
    return call


TRAIN_STEP_ERRORS = [
    ("model_none", _step_with(lambda model, loss, opt, x, t: (None, loss, opt, x, t)),
     TypeError, r"^model must be a Sequential or another layer, got NoneType"),
    ("model_is_loss", _step_with(lambda model, loss, opt, x, t: (loss, loss, opt, x, t)),
     TypeError, r"^model is the loss SoftmaxCrossEntropy"),
    ("loss_none", _step_with(lambda model, loss, opt, x, t: (model, None, opt, x, t)),
     TypeError, r"^loss must be a SoftmaxCrossEntropy instance, got NoneType"),
    ("loss_class", _step_with(lambda model, loss, opt, x, t: (model, SoftmaxCrossEntropy, opt, x, t)),
     TypeError, r"^loss must be .* got the class SoftmaxCrossEntropy"),
    ("loss_and_optimizer_swapped", _step_with(lambda model, loss, opt, x, t: (model, opt, loss, x, t)),
     TypeError, r"^loss must be a SoftmaxCrossEntropy instance, got SGD"),
    ("optimizer_none", _step_with(lambda model, loss, opt, x, t: (model, loss, None, x, t)),
     TypeError, r"^optimizer must be an SGD or Adam instance, got NoneType"),
    ("optimizer_is_parameter_list", _step_with(lambda model, loss, opt, x, t: (model, loss, model.parameters(), x, t)),
     TypeError, r"^optimizer must be an SGD or Adam instance, got list"),
    ("optimizer_of_other_model",
     _step_with(lambda model, loss, opt, x, t: (model, loss, SGD(mlp([3, 4, 2], rng=1).parameters(), lr=0.1), x, t)),
     ValueError, r"^optimizer.params\[0\] \(Parameter\(shape=\(3, 4\).*is not a Parameter of the model"),
    ("ragged_x", _step_with(lambda model, loss, opt, x, t: (model, loss, opt, RAGGED, t)),
     ValueError, r"^x cannot be converted"),
    ("ragged_targets", _step_with(lambda model, loss, opt, x, t: (model, loss, opt, x, [[0], [1, 0], [0], [1], [1]])),
     ValueError, r"^targets cannot be converted"),
]


@pytest.mark.parametrize(
    "call, error, pattern",
    [case[1:] for case in TRAIN_STEP_ERRORS],
    ids=[case[0] for case in TRAIN_STEP_ERRORS],
)
def test_train_step_rejects(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_train_step_rejects_before_updating():
    model, loss, _ = setup_step()
    optimizer = SGD(mlp([3, 4, 2], rng=1).parameters(), lr=0.1)
    before = [parameter.data.copy() for parameter in optimizer.params]

    with pytest.raises(ValueError, match="is not a Parameter of the model"):
        train_step(model, loss, optimizer, ramp(5, 3), labels())

    for parameter, saved in zip(optimizer.params, before):
        np.testing.assert_array_equal(parameter.data, saved)


def test_train_step_rejects_optimizer_after_weight_replaced():
    model, loss, optimizer = setup_step()
    train_step(model, loss, optimizer, ramp(5, 3), labels())
    model[0].weight = Parameter(np.zeros((3, 4), np.float32))

    with pytest.raises(ValueError, match=re.escape("optimizer.params[0]")):
        train_step(model, loss, optimizer, ramp(5, 3), labels())


def test_train_step_accepts_optimizer_of_some_parameters():
    model, loss, _ = setup_step()
    last = model[-1]
    optimizer = SGD(last.parameters(), lr=0.5)
    first_weight = model[0].weight.data.copy()
    last_weight = last.weight.data.copy()

    value = train_step(model, loss, optimizer, ramp(5, 3), labels())

    assert np.isfinite(value)
    np.testing.assert_array_equal(model[0].weight.data, first_weight)
    assert not np.array_equal(last.weight.data, last_weight)


# ---------------------------------------------------------------------------
# Files and threads
# ---------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_load_fifo_raises_without_blocking(tmp_path):
    path = tmp_path / "model.npz"
    os.mkfifo(path)

    with pytest.raises(ValueError, match="it is not a regular file"):
        load(path)


def test_load_directory_raises_is_a_directory(tmp_path):
    with pytest.raises(IsADirectoryError):
        load(tmp_path)


def test_set_num_threads_beyond_c_int():
    with pytest.raises(ValueError, match="n_threads must be at most 2147483647, got 2147483648"):
        set_num_threads(2**31)


# ---------------------------------------------------------------------------
# Estimator
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["shuffle", "warm_start", "nesterovs_momentum", "early_stopping"])
def test_estimator_rejects_string_flag(name):
    pytest.importorskip("sklearn")
    from nnback import MLPClassifier

    classifier = MLPClassifier(hidden_layer_sizes=(3,), max_iter=1, **{name: "no"})

    with pytest.raises(ValueError, match=f"{name} must be True or False, got 'no'"):
        classifier.fit(ramp(10, 3), np.arange(10) % 2)


def test_estimator_rejects_negative_verbose():
    pytest.importorskip("sklearn")
    from nnback import MLPClassifier

    classifier = MLPClassifier(hidden_layer_sizes=(3,), max_iter=1, verbose=-1)

    with pytest.raises(ValueError, match="verbose must be a bool or an integer >= 0, got -1"):
        classifier.fit(ramp(10, 3), np.arange(10) % 2)
