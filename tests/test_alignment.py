"""Arrays at an odd byte offset never reach the kernels.

The kernels read and write through typed C pointers, and a float32 or intp
pointer that is not aligned to its item size is undefined behavior in C, even
where x86-64 tolerates it. These tests wrap the kernels with a check of every
array argument, and compare the results with those of aligned copies.
tools/sanitize.sh runs the same calls under UndefinedBehaviorSanitizer, which
reports any misaligned load that slips through.
"""

import numpy as np
import pytest

import nnback
from nnback import _linear, _optim, _softmax, functional, training
from nnback.layers import Linear, Parameter, ReLU, Sequential, Sigmoid, SoftmaxCrossEntropy, Tanh


def misaligned(values, dtype=np.float32):
    """Return a copy of ``values`` that starts one byte into its buffer."""
    values = np.asarray(values, dtype=dtype)
    buffer = np.zeros(values.nbytes + 16, np.uint8)
    array = np.ndarray(values.shape, dtype=dtype, buffer=buffer, offset=1)
    array[...] = values
    assert not array.flags.aligned
    return array


def require_aligned(function):
    """Wrap ``function`` so that it raises AssertionError for a misaligned array argument."""

    def checked(*args, **kwargs):
        for position, argument in enumerate([*args, *kwargs.values()]):
            if isinstance(argument, np.ndarray):
                assert argument.flags.aligned, f"argument {position} of {function.__name__} is misaligned"
        return function(*args, **kwargs)

    return checked


@pytest.fixture
def checked_kernels(monkeypatch):
    """Wrap the kernels that the Python layer reaches through module attributes."""
    for module, names in [
        (_linear, ["forward", "backward"]),
        (_softmax, ["softmax", "log_softmax", "cross_entropy_labels",
                    "cross_entropy_probabilities", "first_invalid_label"]),
        (_optim, ["sgd_update", "sgd_momentum_update", "adam_update"]),
    ]:
        for name in names:
            monkeypatch.setattr(module, name, require_aligned(getattr(module, name)))
    for layer_class in [ReLU, Sigmoid, Tanh]:
        for attribute in ["_forward_kernel", "_backward_kernel"]:
            kernel = getattr(layer_class, attribute)
            monkeypatch.setattr(layer_class, attribute, staticmethod(require_aligned(kernel)))


def test_functional_copies_misaligned_arrays(checked_kernels):
    rng = np.random.default_rng(0)
    x, weight = rng.standard_normal((5, 4)), rng.standard_normal((4, 3))
    bias, z = rng.standard_normal(3), rng.standard_normal((5, 3))
    labels = np.array([0, 1, 2, 0, 1])

    y = misaligned(np.zeros((5, 3)))
    result = functional.linear_forward(misaligned(x), misaligned(weight), misaligned(bias), out=y)
    assert result is y
    np.testing.assert_array_equal(y, functional.linear_forward(x.astype(np.float32), weight.astype(np.float32),
                                                               bias.astype(np.float32)))

    out = misaligned(np.zeros((5, 3)))
    assert functional.log_softmax(misaligned(z), out=out) is out
    np.testing.assert_array_equal(out, functional.log_softmax(z.astype(np.float32)))

    loss = functional.softmax_cross_entropy(misaligned(z), misaligned(labels, np.intp))
    expected = functional.softmax_cross_entropy(z.astype(np.float32), labels)
    assert loss[0] == expected[0]


def test_layers_copy_misaligned_arrays(checked_kernels):
    rng = np.random.default_rng(1)
    x, labels = rng.standard_normal((6, 4)), np.array([0, 1, 2, 0, 1, 2])
    model = Sequential(Linear(4, 5, rng=0), ReLU(), Linear(5, 3, rng=1))
    loss = SoftmaxCrossEntropy()

    value = loss.forward(model.forward(misaligned(x)), misaligned(labels, np.intp))
    model.backward(loss.backward())
    gradient = model.layers[0].weight.grad.copy()
    expected_value = loss.forward(model.forward(x.astype(np.float32)), labels)
    model.backward(loss.backward())

    assert value == expected_value
    np.testing.assert_array_equal(gradient, model.layers[0].weight.grad)


def test_activation_predict_misaligned_out(checked_kernels):
    x = np.linspace(-2.0, 2.0, 10, dtype=np.float32)
    out = misaligned(np.zeros(10))

    assert Tanh().predict(x, out=out) is out
    np.testing.assert_array_equal(out, Tanh().predict(x))


def test_train_step_copies_misaligned_input(monkeypatch, checked_kernels):
    compiled_chain = training._compiled_chain

    class CheckedChain:
        def __init__(self, chain):
            self.dtype = chain.dtype
            self.train_step = require_aligned(chain.train_step)

    monkeypatch.setattr(training, "_compiled_chain", lambda model: CheckedChain(compiled_chain(model)))
    rng = np.random.default_rng(2)
    x, labels = rng.standard_normal((6, 4)), np.array([0, 1, 2, 0, 1, 2])
    model = nnback.mlp([4, 5, 3], rng=0)
    reference = nnback.mlp([4, 5, 3], rng=0)

    value = nnback.train_step(model, SoftmaxCrossEntropy(), nnback.SGD(model.parameters(), lr=0.1),
                              misaligned(x), misaligned(labels, np.intp))
    expected = nnback.train_step(reference, SoftmaxCrossEntropy(),
                                 nnback.SGD(reference.parameters(), lr=0.1), x.astype(np.float32), labels)

    assert value == expected
    for parameter, reference_parameter in zip(model.parameters(), reference.parameters()):
        np.testing.assert_array_equal(parameter.data, reference_parameter.data)


def test_parameter_rejects_misaligned_replacement():
    parameter = Parameter(np.zeros(6, np.float32))

    with pytest.raises(ValueError, match="aligned"):
        parameter.grad = misaligned(np.ones(6))
    with pytest.raises(ValueError, match="aligned"):
        parameter.data = misaligned(np.ones(6))


def test_parameter_copies_misaligned_data(checked_kernels):
    data = misaligned(np.arange(6.0))
    parameter = Parameter(data)
    parameter.grad[...] = 1.0

    nnback.Adam([parameter], lr=0.1).step()

    assert parameter.data.flags.aligned
    np.testing.assert_array_equal(data, np.arange(6.0, dtype=np.float32))
