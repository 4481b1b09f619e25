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


# ---------------------------------------------------------------------------
# Stateful misuse: shared layers and Parameters, flags, optimizer buffers
# ---------------------------------------------------------------------------


def _tied_model():
    """Return a model whose two square Linear layers share one weight Parameter."""
    first, second = Linear(4, 4, rng=0), Linear(4, 4, rng=1)
    model = Sequential(first, ReLU(), second)
    second.weight = first.weight
    return model


def _unique_parameters(model):
    unique = []
    for parameter in model.parameters():
        if all(parameter is not seen for seen in unique):
            unique.append(parameter)
    return unique


def _tie_at_construction():
    first, second = Linear(4, 4, rng=0), Linear(4, 4, rng=1)
    second.weight = first.weight
    return Sequential(first, ReLU(), second)


def _nested_same_layer():
    layer = Linear(4, 4, rng=0)
    return Sequential(Sequential(layer), layer)


def _backward_of_tied_model():
    model = _tied_model()
    model.forward(np.ones((2, 4), np.float32))
    model.backward(np.ones((2, 4), np.float32))


def _train_step_of_tied_model():
    model = _tied_model()
    optimizer = SGD(_unique_parameters(model), lr=0.1)
    train_step(model, SoftmaxCrossEntropy(), optimizer, ramp(5, 4), np.array([0, 1, 2, 3, 0]))


def _linear_backward_with_flag(flag):
    layer = Linear(3, 2, rng=0)
    layer.forward(ramp(5, 3))
    layer.backward(np.ones((5, 2), np.float32), need_dx=flag)


def _model_backward_with_flag(flag):
    model = mlp([3, 4, 2], rng=0)
    model.forward(ramp(5, 3))
    model.backward(np.ones((5, 2), np.float32), need_dx=flag)


def _set_attribute(target, name, value):
    setattr(target, name, value)


STATE_ERRORS = [
    ("sequential_shared_parameter", _tie_at_construction,
     ValueError, r"^layers\[2\] uses the same Parameter \(Parameter\(shape=\(4, 4\).* as "
                 r"layers\[0\]: shared \(tied\) Parameters are not supported"),
    ("sequential_nested_same_layer", _nested_same_layer,
     ValueError, r"^layers\[1\] is the same object as layers\[0\]\.layers\[0\]"),
    ("backward_shared_parameter", _backward_of_tied_model,
     ValueError, r"layers\[2\] uses the same Parameter"),
    ("train_step_shared_parameter", _train_step_of_tied_model,
     ValueError, r"layers\[2\] uses the same Parameter"),
    ("linear_backward_need_dx_str", lambda: _linear_backward_with_flag("no"),
     TypeError, r"^need_dx must be True or False, got str 'no'"),
    ("model_backward_need_dx_int", lambda: _model_backward_with_flag(1),
     TypeError, r"^need_dx must be True or False, got int 1"),
    ("sgd_velocity_assigned",
     lambda: _set_attribute(SGD(mlp([3, 2], rng=0).parameters(), lr=0.1, momentum=0.5), "velocity", []),
     AttributeError, r"^SGD.velocity is read-only"),
    ("adam_exp_avg_assigned",
     lambda: _set_attribute(Adam(mlp([3, 2], rng=0).parameters()), "exp_avg", []),
     AttributeError, r"^Adam.exp_avg is read-only"),
    ("adam_exp_avg_sq_assigned",
     lambda: _set_attribute(Adam(mlp([3, 2], rng=0).parameters()), "exp_avg_sq", []),
     AttributeError, r"^Adam.exp_avg_sq is read-only"),
]


@pytest.mark.parametrize(
    "call, error, pattern", [case[1:] for case in STATE_ERRORS], ids=[case[0] for case in STATE_ERRORS]
)
def test_stateful_misuse_rejected(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_train_step_shared_parameter_leaves_weights():
    model = _tied_model()
    before = [parameter.data.copy() for parameter in model.parameters()]
    optimizer = SGD(_unique_parameters(model), lr=0.1)

    with pytest.raises(ValueError, match="same Parameter"):
        train_step(model, SoftmaxCrossEntropy(), optimizer, ramp(5, 4), np.array([0, 1, 2, 3, 0]))

    for parameter, saved in zip(model.parameters(), before):
        np.testing.assert_array_equal(parameter.data, saved)


@pytest.mark.parametrize("module", MODULES.values(), ids=MODULES.keys())
@pytest.mark.parametrize("flag", ["no", None, 0, np.array([True, False])], ids=["str", "none", "int", "array"])
def test_linear_backward_rejects_non_bool_need_dx(module, flag):
    with pytest.raises(TypeError, match=r"^need_dx must be True or False, got "):
        module.linear_backward(ramp(2, 3), ramp(3, 4), ramp(2, 4), need_dx=flag)


@pytest.mark.parametrize("module", MODULES.values(), ids=MODULES.keys())
def test_linear_backward_accepts_numpy_bool_need_dx(module):
    x, weight, dy = ramp(2, 3), ramp(3, 4), ramp(2, 4)
    dx, dweight, dbias = module.linear_backward(x, weight, dy, need_dx=np.bool_(True))
    np.testing.assert_allclose(dx, dy @ weight.T, rtol=1e-12)
    np.testing.assert_allclose(dweight, x.T @ dy, rtol=1e-12)
    assert module.linear_backward(x, weight, dy, need_dx=np.bool_(False))[0] is None


def test_sgd_velocity_values_copied_in_are_used():
    parameter = Parameter(np.array([1.0, 2.0]))
    parameter.grad[...] = 0.5
    optimizer = SGD([parameter], lr=0.1, momentum=0.5)
    optimizer.velocity[0][...] = 1.0

    optimizer.step()

    # v = 0.5 * 1 + 0.5 = 1, param = param - 0.1 * v
    np.testing.assert_allclose(parameter.data, [0.9, 1.9], rtol=1e-12)


def test_load_mnist_idx_unsearchable_folder_names_permission(tmp_path, monkeypatch):
    from nnback import datasets

    folder = tmp_path / "mnist"
    folder.mkdir()
    real_stat = os.stat

    def denied_stat(path, *args, **kwargs):
        if os.fspath(path).startswith(os.fspath(folder) + os.sep):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_stat(path, *args, **kwargs)

    # A folder with mode 000 does not stop root, so the refused search is simulated.
    monkeypatch.setattr(datasets.os, "stat", denied_stat)
    with pytest.raises(PermissionError, match=r"mnist.train-images-idx3-ubyte"):
        datasets.load_mnist_idx(folder)


# ---------------------------------------------------------------------------
# Thread counts, data set loaders and the estimator's state between fits
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("count", [np.int64(1), np.int32(1), np.uint8(1)], ids=["int64", "int32", "uint8"])
def test_thread_count_accepts_numpy_int(count):
    from threadpoolctl import threadpool_info

    from nnback import threads

    with threads(count):
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())


@pytest.mark.parametrize("count", [np.float64(2.0), np.bool_(True)], ids=["float64", "bool"])
def test_thread_count_rejects_numpy_non_int(count):
    with pytest.raises(ValueError, match=r"^n_threads must be a positive integer, got "):
        set_num_threads(count)


DIGITS_ERRORS = [
    ("fraction_zero", dict(test_fraction=0), r"^test_fraction must be a number in \(0, 1\), got 0$"),
    ("fraction_one", dict(test_fraction=1.0), r"got 1\.0$"),
    ("fraction_count", dict(test_fraction=100), r"got 100$"),
    ("fraction_nan", dict(test_fraction=float("nan")), r"^test_fraction .* got nan$"),
    ("fraction_bool", dict(test_fraction=True), r"^test_fraction .* got True$"),
    ("fraction_none", dict(test_fraction=None), r"^test_fraction .* got None$"),
    ("seed_negative", dict(seed=-1), r"^seed must be an int in \[0, 2\*\*32 - 1\], got -1$"),
    ("seed_beyond_uint32", dict(seed=2**32), r"^seed .* got 4294967296$"),
    ("seed_float", dict(seed=1.5), r"^seed .* got 1\.5$"),
]


@pytest.mark.parametrize(
    "kwargs, pattern", [case[1:] for case in DIGITS_ERRORS], ids=[case[0] for case in DIGITS_ERRORS]
)
def test_load_digits_rejects_split_arguments(kwargs, pattern):
    pytest.importorskip("sklearn")
    from nnback.datasets import load_digits

    with pytest.raises(ValueError, match=pattern):
        load_digits(**kwargs)


def test_load_digits_accepts_numpy_scalars():
    pytest.importorskip("sklearn")
    from nnback.datasets import load_digits

    data = load_digits(test_fraction=np.float32(0.5), seed=np.int64(3))
    assert data.x_test.shape[0] == 899  # ceil(0.5 * 1797)
    assert data.x_train.shape[0] == 898


def _write_dataset(path):
    x = np.eye(3, dtype=np.float32)
    y = np.array([0, 1, 2])
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)


@pytest.mark.parametrize("loader_name", ["load_npz", "load_dataset", "load_samples"])
def test_dataset_loaders_accept_bytes_path(tmp_path, loader_name):
    from nnback import datasets

    path = tmp_path / "data.npz"
    _write_dataset(path)

    result = getattr(datasets, loader_name)(os.fsencode(path))

    x = result[0] if isinstance(result, tuple) else result.x_train
    np.testing.assert_array_equal(x, np.eye(3, dtype=np.float32))


def test_read_idx_accepts_bytes_path(tmp_path):
    from nnback import datasets

    path = tmp_path / "labels-idx1-ubyte"
    # IDX header: two zero bytes, type code 0x08 (uint8), one dimension of size 3.
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))

    np.testing.assert_array_equal(datasets.read_idx(os.fsencode(path)), [7, 2, 1])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
@pytest.mark.parametrize(
    "loader_name, name",
    [("load_npz", "data.npz"), ("load_dataset", "data.npz"), ("load_samples", "data.npz"),
     ("load_samples", "data.npy"), ("read_idx", "labels-idx1-ubyte"),
     ("read_idx", "labels-idx1-ubyte.gz")],
)
def test_dataset_loaders_reject_fifo_without_blocking(tmp_path, loader_name, name):
    from nnback import datasets

    path = tmp_path / name
    os.mkfifo(path)

    with pytest.raises(ValueError, match=re.escape(f"{path}: not a regular file")):
        getattr(datasets, loader_name)(path)


def test_load_mnist_idx_file_path_raises(tmp_path):
    from nnback import datasets

    path = tmp_path / "data.npz"
    _write_dataset(path)

    with pytest.raises(NotADirectoryError, match="expected a folder with the MNIST IDX files"):
        datasets.load_mnist_idx(path)


def _estimator_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4))
    y = np.arange(40) % 3
    return x, y


def _refit_with(first, second, partial=False):
    from nnback import MLPClassifier

    x, y = _estimator_data()
    classifier = MLPClassifier(hidden_layer_sizes=(5,), max_iter=2, random_state=0, **first)
    if partial:
        classifier.partial_fit(x, y, classes=[0, 1, 2])
    else:
        classifier.fit(x, y)
    classifier.set_params(**second)
    if partial:
        classifier.partial_fit(x, y)
    else:
        classifier.fit(x, y)
    return classifier


ESTIMATOR_REFIT_ERRORS = [
    ("warm_start_hidden_sizes", dict(warm_start=True), dict(hidden_layer_sizes=(7, 2)), False,
     r"^hidden_layer_sizes=\(7, 2\) differs from the hidden layer sizes \(5,\) of the fitted network"),
    ("warm_start_activation", dict(warm_start=True), dict(activation="tanh"), False,
     r"^activation='tanh' differs from the activation 'relu' of the fitted network"),
    ("partial_fit_hidden_sizes", dict(), dict(hidden_layer_sizes=(9,)), True,
     r"^hidden_layer_sizes=\(9,\) differs"),
    ("early_stopping_fraction_zero", dict(early_stopping=True, validation_fraction=0.0), dict(), False,
     r"^validation_fraction=0 leaves no validation set for early_stopping=True"),
]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(
    "first, second, partial, pattern",
    [case[1:] for case in ESTIMATOR_REFIT_ERRORS],
    ids=[case[0] for case in ESTIMATOR_REFIT_ERRORS],
)
def test_estimator_refit_rejects(first, second, partial, pattern):
    pytest.importorskip("sklearn")
    with pytest.raises(ValueError, match=pattern):
        _refit_with(first, second, partial)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_estimator_warm_start_turns_early_stopping_on():
    pytest.importorskip("sklearn")
    classifier = _refit_with(dict(warm_start=True), dict(early_stopping=True))
    # Two epochs of each fit: only the second one has validation scores.
    assert len(classifier.loss_curve_) == 4
    assert len(classifier.validation_scores_) == 2
    assert classifier.best_validation_score_ == max(classifier.validation_scores_)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("partial", [False, True], ids=["fit", "partial_fit"])
def test_estimator_continues_after_early_stopping_turned_off(partial):
    pytest.importorskip("sklearn")
    first = dict(warm_start=True, early_stopping=True)
    if partial:
        classifier = _refit_with(first, dict(early_stopping=False))
        x, y = _estimator_data()
        classifier.partial_fit(x, y)
    else:
        classifier = _refit_with(first, dict(early_stopping=False))
    assert classifier.best_loss_ == min(classifier.loss_curve_[2:])


@pytest.mark.parametrize("loader_name", ["load_dataset", "load_samples", "load_mnist_idx"])
def test_dataset_loaders_reject_nul_in_path(tmp_path, loader_name):
    from nnback import datasets

    with pytest.raises(ValueError, match="null"):
        getattr(datasets, loader_name)(os.path.join(tmp_path, "a\0b.npz"))
