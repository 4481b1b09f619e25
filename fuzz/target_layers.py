"""Fuzz target: layers, the loss, Sequential, mlp and the optimizers as state machines.

Each input builds a model from drawn constructor arguments: a Linear layer,
an activation, ``mlp`` or a ``Sequential`` of drawn layers. It then runs a
drawn sequence of operations on the model: forward, backward and predict in
any order, parameter reassignment, ``Parameter.data`` and ``.grad``
assignment, optimizers with drawn hyperparameters, step, zero_grad, the loss,
and save.

Pass criterion: every call returns or raises ValueError or TypeError. The
documented extras are RuntimeError for backward before forward and
AttributeError for assigning ``Sequential.layers``. Inputs passed to forward,
predict and backward are not modified. After every operation each Parameter
keeps its shape and dtype, and the flat views that the compiled optimizers
write through still alias ``data`` and ``grad``. A plain SGD step moves
``data`` by ``-lr * (grad + weight_decay * data)``. ``predict`` agrees with
``forward``, and a saved model loads back with the same predictions.
"""

import os
import tempfile

import numpy as np
from hypothesis import strategies as st

import nnback
from fuzz.common import (
    OBJECTS,
    ArraySnapshot,
    FuzzFailure,
    call_checked,
    draw_argument,
    draw_array,
    fuzz_target,
)
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
)
from nnback._files import TEMPORARY_PREFIX

ALLOWED = (ValueError, TypeError)
ALLOWED_BACKWARD = (ValueError, TypeError, RuntimeError)

OPERATIONS = (
    "forward", "forward", "backward", "backward", "predict", "set_parameter", "set_data",
    "optimizer", "step", "step", "zero_grad", "set_hyperparameter", "loss_forward",
    "loss_backward", "set_reduction", "set_layers", "save",
)
HYPERPARAMETERS = ("lr", "momentum", "nesterov", "weight_decay", "betas", "eps", "step_count")
NUMBERS = st.one_of(
    st.sampled_from([0.0, 0.1, 0.9, 1.0, -0.1, 1.5, float("nan"), float("inf"), 1e300, 0]),
    st.floats(),
    OBJECTS,
)
ACTIVATIONS = (ReLU, Sigmoid, Tanh)


# ---------------------------------------------------------------------------
# Model construction
# ---------------------------------------------------------------------------


def _draw_size(data):
    if data.draw(st.integers(0, 9)) == 0:
        return data.draw(st.one_of(OBJECTS, st.sampled_from([-1, 2**31, True, np.int8(3)])))
    return data.draw(st.integers(0, 5))


def _draw_dtype(data):
    if data.draw(st.integers(0, 9)) == 0:
        return data.draw(st.one_of(OBJECTS, st.sampled_from(["float16", "int32", "f8", None])))
    return data.draw(st.sampled_from([np.float32, np.float64, "float32", "float64"]))


def _draw_linear(data):
    kwargs = {}
    if data.draw(st.booleans()):
        kwargs["bias"] = data.draw(st.one_of(st.booleans(), OBJECTS))
    if data.draw(st.booleans()):
        kwargs["dtype"] = _draw_dtype(data)
    if data.draw(st.booleans()):
        kwargs["init"] = data.draw(st.one_of(st.sampled_from(["he", "glorot", "xavier"]), OBJECTS))
    kwargs["rng"] = data.draw(st.one_of(st.integers(0, 2**32), st.none(), OBJECTS))
    return call_checked("Linear", Linear, ALLOWED, _draw_size(data), _draw_size(data), **kwargs)


def _draw_layer(data):
    kind = data.draw(st.sampled_from(["linear", "linear", "activation", "loss", "object"]))
    if kind == "linear":
        outcome, layer = _draw_linear(data)
        return layer if outcome == "ok" else ReLU()
    if kind == "activation":
        return data.draw(st.sampled_from(ACTIVATIONS))()
    if kind == "loss":
        return SoftmaxCrossEntropy()
    return data.draw(OBJECTS)


def _draw_model(data):
    """Return a model built from drawn arguments, or a small valid model if construction raised."""
    kind = data.draw(st.sampled_from(["linear", "activation", "mlp", "sequential"]))
    if kind == "linear":
        outcome, model = _draw_linear(data)
    elif kind == "activation":
        outcome, model = "ok", data.draw(st.sampled_from(ACTIVATIONS))()
    elif kind == "mlp":
        if data.draw(st.integers(0, 4)) == 0:
            sizes = data.draw(st.one_of(OBJECTS, st.lists(OBJECTS, max_size=3)))
        else:
            sizes = data.draw(st.lists(st.integers(0, 5), min_size=0, max_size=4))
        activation = data.draw(st.one_of(st.sampled_from(["relu", "tanh", "sigmoid", "gelu"]), OBJECTS))
        outcome, model = call_checked(
            "mlp", nnback.mlp, ALLOWED, sizes, activation, dtype=_draw_dtype(data),
            rng=data.draw(st.integers(0, 100)),
        )
    else:
        layers = [_draw_layer(data) for _ in range(data.draw(st.integers(0, 4)))]
        if layers and data.draw(st.integers(0, 5)) == 0:
            layers.append(layers[0])
        outcome, model = call_checked("Sequential", Sequential, ALLOWED, *layers)
    if outcome != "ok":
        model = nnback.mlp([3, 4, 2], "tanh", rng=0)
    return model


# ---------------------------------------------------------------------------
# State and invariants
# ---------------------------------------------------------------------------


class _State:
    def __init__(self, model, directory):
        self.model = model
        self.loss = SoftmaxCrossEntropy()
        self.optimizer = None
        self.last_output_shape = None
        self.directory = directory

    def linear_layers(self):
        if isinstance(self.model, Linear):
            return [self.model]
        if isinstance(self.model, Sequential):
            return [layer for layer in self.model.layers if isinstance(layer, Linear)]
        return []

    def in_features(self):
        layers = self.linear_layers()
        return layers[0].in_features if layers else 3

    def dtype(self):
        layers = self.linear_layers()
        return layers[0].dtype if layers else np.dtype(np.float32)


def _check_invariants(state, operation):
    """Raise FuzzFailure if a Parameter or Linear layer is in a state the kernels cannot use."""
    for layer in state.linear_layers():
        parameters = [("weight", layer.weight, (layer.in_features, layer.out_features))]
        if layer.bias is not None:
            parameters.append(("bias", layer.bias, (layer.out_features,)))
        for name, parameter, shape in parameters:
            problems = []
            for field in ("data", "grad"):
                array = getattr(parameter, field)
                if type(array) is not np.ndarray:
                    problems.append(f"{field} is a {type(array).__name__}")
                elif array.shape != shape or array.dtype != layer.dtype:
                    problems.append(f"{field} has shape {array.shape} and dtype {array.dtype}")
                elif not array.flags.c_contiguous or not array.flags.writeable:
                    problems.append(f"{field} is not writable and C-contiguous")
            if not problems and parameter.data.size:
                # The optimizers write through these flat views. Empty arrays share no memory.
                if not np.shares_memory(parameter._flat_data, parameter.data):
                    problems.append("the flat view of data is stale")
                if not np.shares_memory(parameter._flat_grad, parameter.grad):
                    problems.append("the flat view of grad is stale")
            if problems:
                raise FuzzFailure(
                    f"layers: after {operation}, Linear.{name} is broken",
                    f"{layer!r}: {'; '.join(problems)}",
                )


# ---------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------


def _call_with_input(entry_point, function, allowed, named_arrays, *args, **kwargs):
    """Call ``function`` and check that the arrays in ``named_arrays`` are unchanged."""
    snapshot = ArraySnapshot(named_arrays)
    outcome, result = call_checked(entry_point, function, allowed, *args, **kwargs)
    exempt = [kwargs.get("out")] if outcome == "ok" else []
    snapshot.check(entry_point, exempt=exempt)
    return outcome, result


def _forward(data, state):
    x = draw_argument(data, (data.draw(st.integers(0, 4)), state.in_features()), state.dtype())
    with np.errstate(all="ignore"):
        outcome, y = _call_with_input(
            f"{type(state.model).__name__}.forward", state.model.forward, ALLOWED, {"x": x}, x
        )
    if outcome != "ok":
        return
    state.last_output_shape = y.shape
    forward_output = y.copy()
    with np.errstate(all="ignore"):
        outcome, predicted = call_checked(
            f"{type(state.model).__name__}.predict", state.model.predict, ALLOWED, x
        )
    if outcome != "ok":
        raise FuzzFailure("layers: predict raised for an input that forward accepted", repr(predicted))
    if predicted.shape != forward_output.shape or not np.allclose(
        predicted, forward_output, rtol=1e-6, atol=0, equal_nan=True
    ):
        raise FuzzFailure(
            "layers: predict differs from forward",
            f"{state.model!r}\nforward {forward_output!r}\npredict {predicted!r}",
        )


def _backward(data, state):
    dy = draw_argument(data, state.last_output_shape, state.dtype())
    kwargs = {}
    if isinstance(state.model, (Linear, Sequential)) and data.draw(st.booleans()):
        kwargs["need_dx"] = data.draw(st.one_of(st.booleans(), OBJECTS))
    with np.errstate(all="ignore"):
        _call_with_input(
            f"{type(state.model).__name__}.backward", state.model.backward, ALLOWED_BACKWARD,
            {"dy": dy}, dy, **kwargs,
        )


def _predict(data, state):
    x = draw_argument(data, (data.draw(st.integers(0, 4)), state.in_features()), state.dtype())
    kwargs = {}
    if isinstance(state.model, ACTIVATIONS) and data.draw(st.booleans()):
        if data.draw(st.booleans()) and isinstance(x, np.ndarray):
            kwargs["out"] = x
        else:
            kwargs["out"] = data.draw(st.one_of(st.none(), OBJECTS)) if data.draw(st.booleans()) \
                else draw_array(data, x.shape if isinstance(x, np.ndarray) else None, state.dtype())
    with np.errstate(all="ignore"):
        _call_with_input(
            f"{type(state.model).__name__}.predict", state.model.predict, ALLOWED, {"x": x}, x,
            **kwargs,
        )


def _draw_parameter_value(data, shape, dtype):
    choice = data.draw(st.sampled_from(["parameter", "parameter", "object", "none"]))
    if choice == "parameter":
        outcome, parameter = call_checked(
            "Parameter", Parameter, ALLOWED, draw_argument(data, shape, dtype)
        )
        return parameter if outcome == "ok" else None
    if choice == "object":
        return data.draw(OBJECTS)
    return None


def _set_parameter(data, state):
    layers = state.linear_layers()
    if not layers:
        return
    layer = data.draw(st.sampled_from(layers))
    name = data.draw(st.sampled_from(["weight", "bias"]))
    shape = (layer.in_features, layer.out_features) if name == "weight" else (layer.out_features,)
    value = _draw_parameter_value(data, shape, layer.dtype)
    call_checked(f"Linear.{name} assignment", setattr, ALLOWED, layer, name, value)


def _set_data(data, state):
    parameters = state.model.parameters()
    if not parameters:
        return
    parameter = data.draw(st.sampled_from(parameters))
    field = data.draw(st.sampled_from(["data", "grad"]))
    value = draw_argument(data, parameter.shape, parameter.dtype)
    call_checked(f"Parameter.{field} assignment", setattr, ALLOWED, parameter, field, value)


def _optimizer(data, state):
    params = state.model.parameters()
    choice = data.draw(st.sampled_from(["model", "model", "model", "duplicate", "objects", "single"]))
    if choice == "duplicate" and params:
        params = params + params[:1]
    elif choice == "objects":
        params = data.draw(st.one_of(OBJECTS, st.lists(OBJECTS, max_size=2)))
    elif choice == "single" and params:
        params = params[0]

    kwargs = {}
    if data.draw(st.booleans()):
        cls = SGD
        kwargs["lr"] = data.draw(NUMBERS)
        for name in ("momentum", "nesterov", "weight_decay"):
            if data.draw(st.booleans()):
                kwargs[name] = data.draw(st.booleans()) if name == "nesterov" else data.draw(NUMBERS)
    else:
        cls = Adam
        for name in ("lr", "eps", "weight_decay", "betas"):
            if data.draw(st.booleans()):
                if name == "betas":
                    kwargs[name] = data.draw(st.one_of(st.tuples(NUMBERS, NUMBERS), OBJECTS))
                else:
                    kwargs[name] = data.draw(NUMBERS)
    outcome, optimizer = call_checked(cls.__name__, cls, ALLOWED, params, **kwargs)
    if outcome == "ok":
        state.optimizer = optimizer


def _step(data, state):
    optimizer = state.optimizer
    if optimizer is None:
        return
    plain_sgd = isinstance(optimizer, SGD) and optimizer.momentum == 0
    before = [(p.data.astype(np.float64), p.grad.astype(np.float64)) for p in optimizer.params]
    with np.errstate(all="ignore"):
        call_checked(f"{type(optimizer).__name__}.step", optimizer.step, ALLOWED)
    if not plain_sgd:
        return

    lr, decay = optimizer.lr, optimizer.weight_decay
    if max(lr, decay) > np.finfo(optimizer.params[0].dtype).max:
        # The kernel rounds lr and weight_decay to the parameter dtype, so they become inf.
        return
    for parameter, (data_before, grad_before) in zip(optimizer.params, before):
        with np.errstate(all="ignore"):
            update = lr * (grad_before + decay * data_before)
            expected = data_before - update
            scale = np.abs(data_before) + np.abs(update) + np.abs(lr * grad_before)
        # Where an intermediate term exceeds the parameter dtype's range, the
        # kernel's result is inf or NaN and float64 gives no reference.
        finite = np.isfinite(expected) & (scale < np.finfo(parameter.dtype).max / 4)
        tolerance = 1e-5 if parameter.dtype == np.float32 else 1e-12
        actual = parameter.data.astype(np.float64)
        wrong = finite & ~(np.abs(actual - expected) <= tolerance * scale + 1e-30)
        if wrong.any():
            raise FuzzFailure(
                "layers: SGD.step did not apply data - lr * (grad + weight_decay * data)",
                f"lr={lr} weight_decay={decay}\nexpected {expected[wrong]!r}\n"
                f"actual {actual[wrong]!r}",
            )


def _set_hyperparameter(data, state):
    if state.optimizer is None:
        return
    name = data.draw(st.sampled_from(HYPERPARAMETERS))
    if not hasattr(state.optimizer, name):
        return
    if name == "betas":
        value = data.draw(st.one_of(st.tuples(NUMBERS, NUMBERS), NUMBERS))
    elif name in ("nesterov",):
        value = data.draw(st.one_of(st.booleans(), NUMBERS))
    elif name == "step_count":
        value = data.draw(st.one_of(st.integers(-2, 2**70), NUMBERS))
    else:
        value = data.draw(NUMBERS)
    call_checked(f"{type(state.optimizer).__name__}.{name} assignment", setattr, ALLOWED,
                 state.optimizer, name, value)


def _loss_forward(data, state):
    batch = data.draw(st.integers(0, 4))
    classes = data.draw(st.integers(0, 4))
    logits = draw_argument(data, (batch, classes), state.dtype())
    if data.draw(st.booleans()):
        targets = draw_argument(data, (batch,), "int64")
    else:
        targets = draw_argument(data, (batch, classes), state.dtype())
    with np.errstate(all="ignore"):
        _call_with_input(
            "SoftmaxCrossEntropy.forward", state.loss.forward, (ValueError, TypeError, IndexError),
            {"logits": logits, "targets": targets}, logits, targets,
        )


def _loss_backward(data, state):
    call_checked("SoftmaxCrossEntropy.backward", state.loss.backward, ALLOWED_BACKWARD)


def _set_reduction(data, state):
    value = data.draw(st.one_of(st.sampled_from(["mean", "sum", "none", "avg"]), OBJECTS))
    call_checked("SoftmaxCrossEntropy.reduction assignment", setattr, ALLOWED, state.loss,
                 "reduction", value)


def _set_layers(data, state):
    if not isinstance(state.model, Sequential):
        return
    call_checked("Sequential.layers assignment", setattr, AttributeError, state.model, "layers",
                 (ReLU(),))
    if len(state.model.layers) == 0:
        raise FuzzFailure("layers: Sequential.layers became empty", "")


def _save(data, state):
    if not isinstance(state.model, Sequential):
        return
    path = os.path.join(state.directory, "model.npz")
    previous = None
    if os.path.exists(path):
        with open(path, "rb") as file:
            previous = file.read()
    outcome, _ = call_checked("Sequential.save", state.model.save, ALLOWED, path)

    leftovers = [name for name in os.listdir(state.directory) if name.startswith(TEMPORARY_PREFIX)]
    if leftovers:
        raise FuzzFailure("layers: save left a temporary file", repr(leftovers))
    if outcome != "ok":
        if previous is not None:
            with open(path, "rb") as file:
                if file.read() != previous:
                    raise FuzzFailure("layers: a failed save changed the existing file", "")
        return

    outcome, loaded = call_checked("load", nnback.load, (), path)
    x = np.linspace(-2.0, 2.0, 2 * state.in_features()).reshape(2, -1)
    with np.errstate(all="ignore"):
        expected = state.model.predict(x)
        actual = loaded.predict(x)
    if not np.array_equal(expected, actual, equal_nan=True):
        raise FuzzFailure(
            "layers: a saved model loads with other predictions",
            f"{state.model!r}\nexpected {expected!r}\nactual {actual!r}",
        )


_HANDLERS = {
    "forward": _forward,
    "backward": _backward,
    "predict": _predict,
    "set_parameter": _set_parameter,
    "set_data": _set_data,
    "optimizer": _optimizer,
    "step": _step,
    "zero_grad": lambda data, state: state.optimizer and state.optimizer.zero_grad(),
    "set_hyperparameter": _set_hyperparameter,
    "loss_forward": _loss_forward,
    "loss_backward": _loss_backward,
    "set_reduction": _set_reduction,
    "set_layers": _set_layers,
    "save": _save,
}


@fuzz_target
def fuzz_layers(data):
    with tempfile.TemporaryDirectory(prefix="nnback-fuzz-layers-") as directory:
        state = _State(_draw_model(data), directory)
        for _ in range(data.draw(st.integers(1, 12))):
            operation = data.draw(st.sampled_from(OPERATIONS))
            _HANDLERS[operation](data, state)
            _check_invariants(state, operation)
