"""train_step's compiled dense-chain path against the layers' own passes."""

import numpy as np
import pytest

from nnback.layers import Linear, Sequential, SoftmaxCrossEntropy, Tanh, mlp
from nnback.optim import SGD, Adam
from nnback.training import train_step

TOLERANCE = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}

LAYER_SIZES = [7, 5, 6, 3]


def make_model(activation, dtype, bias=True):
    model = mlp(LAYER_SIZES, activation=activation, dtype=dtype, rng=3)
    if bias:
        return model
    layers = []
    for layer in model.layers:
        if isinstance(layer, Linear):
            plain = Linear(layer.in_features, layer.out_features, bias=False, dtype=dtype, rng=4)
            layers.append(plain)
        else:
            layers.append(layer)
    return Sequential(*layers)


def make_batch(dtype, n_samples=9, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_samples, LAYER_SIZES[0])).astype(dtype)
    labels = rng.integers(0, LAYER_SIZES[-1], n_samples)
    return x, labels


def layerwise_step(model, loss, optimizer, x, labels):
    """The step through each layer's forward and backward, without the compiled chain."""
    value = loss.forward(model.forward(x), labels)
    model.backward(loss.backward())
    optimizer.step()
    return value


def parameters_of(model):
    return [parameter.data.copy() for parameter in model.parameters()]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_fused_sgd_matches_layerwise(dtype, activation, reduction, weight_decay):
    x, labels = make_batch(dtype)
    fused, reference = make_model(activation, dtype), make_model(activation, dtype)
    fused_optimizer = SGD(fused.parameters(), lr=0.1, weight_decay=weight_decay)
    reference_optimizer = SGD(reference.parameters(), lr=0.1, weight_decay=weight_decay)

    for _ in range(3):
        value = train_step(fused, SoftmaxCrossEntropy(reduction), fused_optimizer, x, labels)
        expected = layerwise_step(reference, SoftmaxCrossEntropy(reduction), reference_optimizer,
                                  x, labels)
        assert value == pytest.approx(expected, rel=TOLERANCE[dtype]["rtol"])

    for got, want in zip(parameters_of(fused), parameters_of(reference)):
        np.testing.assert_allclose(got, want, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("make_optimizer", [
    lambda params: Adam(params, lr=0.01),
    lambda params: SGD(params, lr=0.1, momentum=0.9, nesterov=True),
], ids=["adam", "sgd-nesterov"])
def test_gradient_path_matches_layerwise(dtype, make_optimizer):
    x, labels = make_batch(dtype)
    compiled, reference = make_model("relu", dtype), make_model("relu", dtype)
    compiled_optimizer = make_optimizer(compiled.parameters())
    reference_optimizer = make_optimizer(reference.parameters())

    for _ in range(3):
        train_step(compiled, SoftmaxCrossEntropy(), compiled_optimizer, x, labels)
        layerwise_step(reference, SoftmaxCrossEntropy(), reference_optimizer, x, labels)

    for got, want in zip(compiled.parameters(), reference.parameters()):
        np.testing.assert_allclose(got.grad, want.grad, **TOLERANCE[dtype])
        np.testing.assert_allclose(got.data, want.data, **TOLERANCE[dtype])


def test_chain_without_bias_matches_layerwise():
    x, labels = make_batch(np.float64)
    fused, reference = make_model("tanh", np.float64, bias=False), make_model(
        "tanh", np.float64, bias=False)

    train_step(fused, SoftmaxCrossEntropy(), SGD(fused.parameters(), lr=0.5), x, labels)
    layerwise_step(reference, SoftmaxCrossEntropy(), SGD(reference.parameters(), lr=0.5),
                   x, labels)

    for got, want in zip(parameters_of(fused), parameters_of(reference)):
        np.testing.assert_allclose(got, want, **TOLERANCE[np.float64])


def test_unsupported_architecture_uses_layers():
    # An activation before the first Linear is not a dense chain.
    model = Sequential(Tanh(), Linear(7, 3, dtype=np.float64, rng=0))
    reference = Sequential(Tanh(), Linear(7, 3, dtype=np.float64, rng=0))
    x, labels = make_batch(np.float64)

    value = train_step(model, SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.1), x, labels)
    expected = layerwise_step(reference, SoftmaxCrossEntropy(), SGD(reference.parameters(), lr=0.1),
                              x, labels)

    assert value == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(model.layers[1].weight.data, reference.layers[1].weight.data)


def test_probability_targets_use_layers():
    model, reference = make_model("relu", np.float64), make_model("relu", np.float64)
    x, labels = make_batch(np.float64)
    probabilities = np.eye(LAYER_SIZES[-1])[labels] * 0.5 + 0.5 / LAYER_SIZES[-1]

    value = train_step(model, SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.1), x,
                       probabilities)
    expected = layerwise_step(reference, SoftmaxCrossEntropy(), SGD(reference.parameters(), lr=0.1),
                              x, probabilities)

    assert value == pytest.approx(expected, rel=1e-12)


def test_replaced_parameter_data_is_updated():
    model = make_model("relu", np.float64)
    x, labels = make_batch(np.float64)
    optimizer = SGD(model.parameters(), lr=0.1)
    train_step(model, SoftmaxCrossEntropy(), optimizer, x, labels)
    old = model.layers[0].weight.data
    old_before = old.copy()

    replacement = np.full_like(old, 0.01)
    model.layers[0].weight.data = replacement
    train_step(model, SoftmaxCrossEntropy(), optimizer, x, labels)

    np.testing.assert_array_equal(old, old_before)
    assert not np.array_equal(replacement, np.full_like(old, 0.01))


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("targets", [np.empty(0, np.int64), np.empty((0, LAYER_SIZES[-1]))])
def test_empty_batch_raises(weight_decay, targets):
    model = make_model("relu", np.float32)
    before = parameters_of(model)
    x = np.empty((0, LAYER_SIZES[0]), np.float32)
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=weight_decay)

    with pytest.raises(ValueError, match=r"x has shape \(0, 7\) with no samples"):
        train_step(model, SoftmaxCrossEntropy(), optimizer, x, targets)

    for got, want in zip(parameters_of(model), before):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("label_dtype", [np.int8, np.uint8, np.int32, np.uint64])
def test_label_dtypes_match_int64(label_dtype):
    x, labels = make_batch(np.float64)
    first, second = make_model("relu", np.float64), make_model("relu", np.float64)

    value = train_step(first, SoftmaxCrossEntropy(), SGD(first.parameters(), lr=0.1), x,
                       labels.astype(label_dtype))
    expected = train_step(second, SoftmaxCrossEntropy(), SGD(second.parameters(), lr=0.1), x,
                          labels.astype(np.int64))

    assert value == expected


def test_invalid_label_raises_before_update():
    model = make_model("relu", np.float64)
    before = parameters_of(model)
    x, labels = make_batch(np.float64)
    labels[4] = LAYER_SIZES[-1]

    with pytest.raises(IndexError, match="4"):
        train_step(model, SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.1), x, labels)

    for got, want in zip(parameters_of(model), before):
        np.testing.assert_array_equal(got, want)


def test_wrong_input_width_raises():
    model = make_model("relu", np.float64)
    x = np.zeros((4, LAYER_SIZES[0] + 1))

    with pytest.raises(ValueError, match=r"\(B, 7\)"):
        train_step(model, SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.1), x,
                   np.zeros(4, np.int64))


def test_input_is_not_modified():
    model = make_model("relu", np.float32)
    x, labels = make_batch(np.float32)
    x_before, labels_before = x.copy(), labels.copy()

    train_step(model, SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.1), x, labels)

    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(labels, labels_before)


def test_float64_input_to_float32_model_is_converted():
    first, second = make_model("relu", np.float32), make_model("relu", np.float32)
    x, labels = make_batch(np.float64)

    value = train_step(first, SoftmaxCrossEntropy(), SGD(first.parameters(), lr=0.1), x, labels)
    expected = train_step(second, SoftmaxCrossEntropy(), SGD(second.parameters(), lr=0.1),
                          x.astype(np.float32), labels)

    assert value == expected


def test_replaced_weight_parameter_rebuilds_chain():
    from nnback.layers import Parameter

    model = make_model("relu", np.float64)
    x, labels = make_batch(np.float64)
    optimizer_parameters = model.parameters()
    train_step(model, SoftmaxCrossEntropy(), SGD(optimizer_parameters, lr=0.1), x, labels)

    replacement = Parameter(np.full((LAYER_SIZES[0], LAYER_SIZES[1]), 0.01))
    model.layers[0].weight = replacement
    train_step(model, SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.1), x, labels)

    assert not np.array_equal(replacement.data, np.full_like(replacement.data, 0.01))


def test_two_threads_training_one_model():
    # Two threads racing on one model with mixed batch sizes neither crash nor
    # corrupt the parameters: a step that overlaps the other thread's step is
    # rejected with RuntimeError before it touches anything.
    import threading

    model = mlp([16, 32, 4], dtype=np.float32, rng=0)
    optimizer = SGD(model.parameters(), lr=0.01)
    errors = []

    def train(n_samples):
        rng = np.random.default_rng(n_samples)
        x = rng.standard_normal((n_samples, 16)).astype(np.float32)
        labels = rng.integers(0, 4, n_samples)
        for _ in range(300):
            try:
                train_step(model, SoftmaxCrossEntropy(), optimizer, x, labels)
            except RuntimeError as error:
                if "already in use by another thread" not in str(error):
                    errors.append(error)
            except Exception as error:  # noqa: BLE001 - reported by the assert below
                errors.append(error)

    threads = [threading.Thread(target=train, args=(size,)) for size in (8, 512)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    for parameter in model.parameters():
        assert np.all(np.isfinite(parameter.data))


def test_byte_swapped_labels_match_native():
    x, labels = make_batch(np.float64)
    first, second = make_model("relu", np.float64), make_model("relu", np.float64)

    value = train_step(first, SoftmaxCrossEntropy(), SGD(first.parameters(), lr=0.1), x,
                       labels.astype(">i8"))
    expected = train_step(second, SoftmaxCrossEntropy(), SGD(second.parameters(), lr=0.1), x,
                          labels.astype("<i8"))

    assert value == expected
