"""Fuzz target: the entry points of ``nnback.functional``.

Each input calls one entry point with arrays of any dtype, shape, layout and
values, or with other Python objects, and with arbitrary ``out``,
``need_dx`` and ``reduction`` values. ``out`` is sometimes a view of an input,
to exercise the overlap checks.

Pass criterion: the call returns arrays of a floating-point result dtype (and
``out`` itself when ``out`` was given), or raises ValueError, TypeError or
IndexError, which the module documents for invalid arguments. No input array
may change, except through ``out`` of a call that succeeded.
"""

import numpy as np
from hypothesis import strategies as st

from fuzz.common import (
    OBJECTS,
    ArraySnapshot,
    FuzzFailure,
    call_checked,
    draw_argument,
    draw_array,
    fuzz_target,
)
from nnback import functional

ALLOWED = (ValueError, TypeError, IndexError)

ELEMENTWISE_FORWARD = ("sigmoid_forward", "tanh_forward", "relu_forward")
ELEMENTWISE_BACKWARD = ("sigmoid_backward", "tanh_backward", "relu_backward")
ROW_FUNCTIONS = ("softmax", "log_softmax")
ENTRY_POINTS = (
    ("linear_forward", "linear_backward", "softmax_cross_entropy")
    + ELEMENTWISE_FORWARD + ELEMENTWISE_BACKWARD + ROW_FUNCTIONS
)
RESULT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _draw_out(data, shape_hint, inputs):
    """Draw an ``out`` value: None, a fresh buffer, any array, a view of an input, or an object."""
    choice = data.draw(st.sampled_from(["none", "none", "fresh", "array", "alias", "object"]))
    if choice == "fresh" and shape_hint is not None:
        dtype = data.draw(st.sampled_from(["float32", "float64"]))
        return np.zeros(shape_hint, dtype=dtype)
    if choice == "array":
        return draw_array(data, shape_hint, "float32")
    if choice == "alias":
        arrays = [value for value in inputs if isinstance(value, np.ndarray)]
        if arrays:
            source = data.draw(st.sampled_from(arrays))
            view = data.draw(st.sampled_from(["same", "reversed", "shifted", "flat"]))
            if view == "reversed" and source.ndim:
                return source[::-1]
            if view == "shifted" and source.ndim and source.shape[0] > 1:
                return source[1:]
            if view == "flat":
                return source.reshape(-1)
            return source
    if choice == "object":
        return data.draw(OBJECTS)
    return None


def _shape_of(value):
    return value.shape if isinstance(value, np.ndarray) else None


def _draw_call(data, name):
    """Return (args, kwargs) for the entry point ``name``."""
    batch = data.draw(st.integers(0, 5))
    width = data.draw(st.integers(0, 5))
    height = data.draw(st.integers(0, 5))
    kwargs = {}

    if name == "linear_forward":
        x = draw_argument(data, (batch, width), "float32")
        weight = draw_argument(data, (width, height), "float32")
        bias = None if data.draw(st.booleans()) else draw_argument(data, (height,), "float32")
        args = [x, weight, bias]
        out = _draw_out(data, (batch, height), args)
        if out is not None or data.draw(st.booleans()):
            kwargs["out"] = out
    elif name == "linear_backward":
        x = draw_argument(data, (batch, width), "float32")
        weight = draw_argument(data, (width, height), "float32")
        dy = draw_argument(data, (batch, height), "float32")
        args = [x, weight, dy]
        if data.draw(st.booleans()):
            kwargs["need_dx"] = data.draw(st.one_of(st.booleans(), OBJECTS))
    elif name in ELEMENTWISE_FORWARD or name in ROW_FUNCTIONS:
        x = draw_argument(data, (batch, width), "float64")
        args = [x]
        out = _draw_out(data, _shape_of(x), args)
        if out is not None or data.draw(st.booleans()):
            kwargs["out"] = out
    elif name in ELEMENTWISE_BACKWARD:
        y = draw_argument(data, (batch, width), "float32")
        dy = draw_argument(data, _shape_of(y), "float32")
        args = [y, dy]
        out = _draw_out(data, _shape_of(y), args)
        if out is not None or data.draw(st.booleans()):
            kwargs["out"] = out
    else:
        z = draw_argument(data, (batch, width), "float32")
        if data.draw(st.booleans()):
            targets = draw_argument(data, (batch,), "int64")
        else:
            targets = draw_argument(data, (batch, width), "float32")
        args = [z, targets]
        if data.draw(st.booleans()):
            kwargs["reduction"] = data.draw(
                st.one_of(st.sampled_from(["mean", "sum", "none", "MEAN", ""]), OBJECTS)
            )

    if data.draw(st.integers(0, 20)) == 0:
        kwargs["unexpected"] = 1
    return args, kwargs


def _check_result(name, result, kwargs):
    """Raise FuzzFailure unless a successful call returned what the entry point documents."""
    if name == "linear_backward":
        dx, dweight, dbias = result
        outputs = [dweight, dbias] + ([] if dx is None else [dx])
        if (dx is None) == bool(kwargs.get("need_dx", True)):
            raise FuzzFailure(f"{name}: dx is None exactly when need_dx is true", repr(kwargs))
    elif name == "softmax_cross_entropy":
        loss, dz = result
        outputs = [dz]
        if kwargs.get("reduction", "mean") == "none":
            outputs.append(loss)
        elif not isinstance(loss, float):
            raise FuzzFailure(f"{name}: loss is not a float", repr(type(loss)))
    else:
        outputs = [result]
        out = kwargs.get("out")
        if out is not None and result is not out:
            raise FuzzFailure(f"{name}: returned an array other than out", "")

    for output in outputs:
        # An ndarray subclass passed as out (np.matrix, a masked array) is returned as it is.
        if output is not kwargs.get("out") and type(output) is not np.ndarray:
            raise FuzzFailure(f"{name}: returned something other than an ndarray", repr(type(output)))
        if output.dtype not in RESULT_DTYPES:
            raise FuzzFailure(
                f"{name}: returned a dtype other than float32 and float64",
                f"{type(output).__name__} {getattr(output, 'dtype', None)}",
            )


@fuzz_target
def fuzz_functional(data):
    name = data.draw(st.sampled_from(ENTRY_POINTS))
    args, kwargs = _draw_call(data, name)
    function = getattr(functional, name)

    named = {f"arg{index}": value for index, value in enumerate(args)}
    named.update(kwargs)
    snapshot = ArraySnapshot(named)
    with np.errstate(all="ignore"):
        outcome, result = call_checked(f"functional.{name}", function, ALLOWED, *args, **kwargs)

    if outcome == "ok":
        _check_result(name, result, kwargs)
        # A successful call may write to out and to every array that shares its memory.
        snapshot.check(f"functional.{name}", exempt=[kwargs.get("out")])
    else:
        snapshot.check(f"functional.{name}")
