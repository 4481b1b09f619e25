"""nnback.functional and nnback.reference against each other on invalid and edge-case input.

Both modules validate through nnback._validation, so every invalid call must raise
the same exception type with the same message in both. Every valid edge case (NaN
rows, empty batches, dtype promotion, in-place ``out``) must give the same result
up to the tolerance of its dtype. Each case is a function of the module
under test, so that both calls get fresh inputs and fresh ``out`` buffers.
"""

import math

import numpy as np
import pytest

from nnback import functional, reference

pytestmark = pytest.mark.filterwarnings("error")

# Compiled result against the reference in the same computation dtype.
TOLERANCES = {
    np.dtype(np.float32): dict(rtol=2e-5, atol=2e-5),
    np.dtype(np.float64): dict(rtol=1e-12, atol=1e-12),
}

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]

# One dtype per integer type code, so that aliases such as longlong and intp,
# which compare equal to int64 but have their own type code, are all covered.
INTEGER_DTYPES = {f"{code}-{np.dtype(code).name}": np.dtype(code)
                  for code in np.typecodes["AllInteger"]}

ELEMENTWISE = ["sigmoid", "tanh", "relu"]


def _dtype_name(dtype):
    return np.dtype(dtype).name


def _outcome(call, module):
    """Return ("raised", exception) or ("returned", result) for ``call(module)``."""
    try:
        return "returned", call(module)
    except (TypeError, ValueError, IndexError) as error:
        return "raised", error


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def _ramp(*shape, dtype=np.float64):
    """Return distinct, non-symmetric values of the given shape."""
    size = math.prod(shape)
    return (np.linspace(-1.5, 2.0, size) if size else np.empty(0)).reshape(shape).astype(dtype)


def _overlapping_pair(shape, dtype=np.float64):
    """Return two C-contiguous views of one buffer with ``shape``, the second one entry later."""
    size = math.prod(shape)
    flat = np.linspace(-1.0, 1.0, size + 1).astype(dtype)
    return flat[:size].reshape(shape), flat[1:].reshape(shape)


def _bad_out(problem, shape, dtype=np.float64):
    """Return an out argument of the given result shape and dtype that is wrong in one way."""
    dtype = np.dtype(dtype)
    if problem == "wrong-shape":
        return np.zeros(shape[:-1] + (shape[-1] + 1,), dtype=dtype)
    if problem == "transposed-shape":
        return np.zeros(shape[::-1], dtype=dtype)
    if problem == "extra-axis":
        return np.zeros((1,) + shape, dtype=dtype)
    if problem == "wrong-dtype":
        return np.zeros(shape, dtype=np.float32 if dtype == np.float64 else np.float64)
    if problem == "float16":
        return np.zeros(shape, dtype=np.float16)
    if problem == "byteswapped":
        return np.zeros(shape, dtype=dtype.newbyteorder())
    if problem == "not-c-contiguous":
        return np.zeros(shape[::-1], dtype=dtype).T
    if problem == "strided":
        return np.zeros(shape[:-1] + (2 * shape[-1],), dtype=dtype)[..., ::2]
    if problem == "read-only":
        out = np.zeros(shape, dtype=dtype)
        out.flags.writeable = False
        return out
    if problem == "list":
        return np.zeros(shape, dtype=dtype).tolist()
    if problem == "scalar":
        return 0.0
    raise KeyError(problem)


OUT_PROBLEMS = ["wrong-shape", "transposed-shape", "extra-axis", "wrong-dtype", "float16",
                "byteswapped", "not-c-contiguous", "strided", "read-only", "list", "scalar"]

# (function name, call with out, result shape) for every function that takes out.
OUT_CALLS = {
    "linear_forward": (lambda nn, out: nn.linear_forward(_ramp(3, 5), _ramp(5, 4), _ramp(4),
                                                         out=out), (3, 4)),
    "sigmoid_forward": (lambda nn, out: nn.sigmoid_forward(_ramp(3, 4), out=out), (3, 4)),
    "tanh_forward": (lambda nn, out: nn.tanh_forward(_ramp(3, 4), out=out), (3, 4)),
    "relu_forward": (lambda nn, out: nn.relu_forward(_ramp(3, 4), out=out), (3, 4)),
    "sigmoid_backward": (lambda nn, out: nn.sigmoid_backward(_ramp(3, 4), _ramp(3, 4),
                                                             out=out), (3, 4)),
    "tanh_backward": (lambda nn, out: nn.tanh_backward(_ramp(3, 4), _ramp(3, 4), out=out), (3, 4)),
    "relu_backward": (lambda nn, out: nn.relu_backward(_ramp(3, 4), _ramp(3, 4), out=out), (3, 4)),
    "softmax": (lambda nn, out: nn.softmax(_ramp(3, 4), out=out), (3, 4)),
    "log_softmax": (lambda nn, out: nn.log_softmax(_ramp(3, 4), out=out), (3, 4)),
}


# ---------------------------------------------------------------------------
# Invalid calls: the same exception type and message from both modules
# ---------------------------------------------------------------------------

UNSUPPORTED_ARRAYS = {
    "complex64": lambda shape: np.ones(shape, dtype=np.complex64),
    "complex128": lambda shape: np.ones(shape, dtype=np.complex128),
    "object": lambda shape: np.ones(shape, dtype=object),
    "string": lambda shape: np.full(shape, "a"),
    "bytes": lambda shape: np.full(shape, b"a"),
    "datetime": lambda shape: np.zeros(shape, dtype="datetime64[s]"),
    "timedelta": lambda shape: np.zeros(shape, dtype="timedelta64[s]"),
    "structured": lambda shape: np.zeros(shape, dtype=[("a", np.float64)]),
}

ERROR_CASES = {
    # Linear forward: shapes.
    "linear-x-1d": lambda nn: nn.linear_forward(_ramp(5), _ramp(5, 4)),
    "linear-x-3d": lambda nn: nn.linear_forward(_ramp(2, 3, 5), _ramp(5, 4)),
    "linear-x-0d": lambda nn: nn.linear_forward(1.0, _ramp(1, 4)),
    "linear-weight-1d": lambda nn: nn.linear_forward(_ramp(3, 5), _ramp(5)),
    "linear-weight-3d": lambda nn: nn.linear_forward(_ramp(3, 5), _ramp(5, 4, 1)),
    "linear-inner-mismatch": lambda nn: nn.linear_forward(_ramp(3, 5), _ramp(4, 5)),
    "linear-inner-mismatch-empty": lambda nn: nn.linear_forward(_ramp(0, 5), _ramp(0, 4)),
    "linear-bias-length": lambda nn: nn.linear_forward(_ramp(3, 5), _ramp(5, 4), _ramp(3)),
    "linear-bias-2d": lambda nn: nn.linear_forward(_ramp(3, 5), _ramp(5, 4), _ramp(1, 4)),
    "linear-bias-0d": lambda nn: nn.linear_forward(_ramp(3, 5), _ramp(5, 1), 1.0),
    "linear-ragged-list": lambda nn: nn.linear_forward([[1.0, 2.0], [3.0]], _ramp(2, 1)),
    # Linear forward: dtype errors come before shape errors, in argument order.
    "linear-x-complex": lambda nn: nn.linear_forward(np.ones((3, 5), complex), _ramp(5, 4)),
    "linear-weight-object": lambda nn: nn.linear_forward(_ramp(3, 5), np.ones((5, 4), object)),
    "linear-bias-string": lambda nn: nn.linear_forward(_ramp(3, 5), _ramp(5, 4), np.full(4, "b")),
    "linear-complex-and-bad-shape": lambda nn: nn.linear_forward(
        _ramp(3, 5), np.ones((4, 4), complex)),
    "linear-x-and-bias-bad-dtype": lambda nn: nn.linear_forward(
        np.ones((3, 5), complex), _ramp(5, 4), np.ones(4, object)),
    "linear-none-x": lambda nn: nn.linear_forward(None, _ramp(5, 4)),
    # Linear forward: out must not overlap an input, because gemm would overwrite
    # entries that it still reads.
    "linear-out-is-x": lambda nn: (lambda x: nn.linear_forward(x, _ramp(3, 3), out=x))(
        _ramp(3, 3)),
    "linear-out-is-weight": lambda nn: (lambda w: nn.linear_forward(_ramp(3, 3), w, out=w))(
        _ramp(3, 3)),
    "linear-out-contains-bias": lambda nn: (lambda out: nn.linear_forward(
        _ramp(3, 3), _ramp(3, 3), out[1], out=out))(np.zeros((3, 3))),
    "linear-out-overlaps-x": lambda nn: (lambda pair: nn.linear_forward(
        pair[0], _ramp(4, 4), out=pair[1]))(_overlapping_pair((3, 4))),
    "linear-out-overlaps-int-x": lambda nn: (lambda x: nn.linear_forward(
        x, _ramp(2, 2), out=x.view(np.float64)))(np.arange(4, dtype=np.int64).reshape(2, 2)),
    "linear-out-wrong-shape-and-overlapping": lambda nn: (lambda x: nn.linear_forward(
        x, _ramp(3, 2), out=x))(_ramp(3, 3)),
    "linear-out-float32-for-mixed": lambda nn: nn.linear_forward(
        _ramp(3, 5, dtype=np.float32), _ramp(5, 4), out=np.zeros((3, 4), np.float32)),
    "linear-out-float16-for-float16": lambda nn: nn.linear_forward(
        _ramp(3, 5, dtype=np.float16), _ramp(5, 4, dtype=np.float16),
        out=np.zeros((3, 4), np.float16)),
    "linear-out-float32-for-int": lambda nn: nn.linear_forward(
        np.ones((3, 5), int), np.ones((5, 4), int), out=np.zeros((3, 4), np.float32)),

    # Linear backward.
    "linear-backward-x-1d": lambda nn: nn.linear_backward(_ramp(5), _ramp(5, 4), _ramp(1, 4)),
    "linear-backward-weight-1d": lambda nn: nn.linear_backward(_ramp(3, 5), _ramp(5), _ramp(3, 1)),
    "linear-backward-inner-mismatch": lambda nn: nn.linear_backward(
        _ramp(3, 5), _ramp(4, 2), _ramp(3, 2)),
    "linear-backward-dy-1d": lambda nn: nn.linear_backward(_ramp(3, 5), _ramp(5, 4), _ramp(4)),
    "linear-backward-dy-3d": lambda nn: nn.linear_backward(
        _ramp(3, 5), _ramp(5, 4), _ramp(3, 4, 1)),
    "linear-backward-dy-transposed": lambda nn: nn.linear_backward(
        _ramp(3, 5), _ramp(5, 4), _ramp(4, 3)),
    "linear-backward-dy-wrong-rows": lambda nn: nn.linear_backward(
        _ramp(3, 5), _ramp(5, 4), _ramp(2, 4)),
    "linear-backward-dy-wrong-columns": lambda nn: nn.linear_backward(
        _ramp(3, 5), _ramp(5, 4), _ramp(3, 5)),
    "linear-backward-dy-empty-batch": lambda nn: nn.linear_backward(
        _ramp(0, 5), _ramp(5, 4), _ramp(1, 4)),
    "linear-backward-dy-complex": lambda nn: nn.linear_backward(
        _ramp(3, 5), _ramp(5, 4), np.ones((3, 4), complex)),
    "linear-backward-dy-bool-ok-x-object": lambda nn: nn.linear_backward(
        np.ones((3, 5), object), _ramp(5, 4), np.ones((3, 4), bool)),
    "linear-backward-dtype-before-shape": lambda nn: nn.linear_backward(
        _ramp(3, 5), _ramp(4, 4), np.ones((7,), "datetime64[s]")),
    "linear-backward-no-dx-bad-shape": lambda nn: nn.linear_backward(
        _ramp(3, 5), _ramp(5, 4), _ramp(3, 3), need_dx=False),

    # Element-wise backward: shapes and dtypes.
    **{
        f"{name}-backward-shape-mismatch": (
            lambda nn, name=name: getattr(nn, f"{name}_backward")(_ramp(2, 3), _ramp(3, 2)))
        for name in ELEMENTWISE
    },
    **{
        f"{name}-backward-broadcastable-shapes": (
            lambda nn, name=name: getattr(nn, f"{name}_backward")(_ramp(3), _ramp(2, 3)))
        for name in ELEMENTWISE
    },
    "sigmoid-backward-0d-and-1d": lambda nn: nn.sigmoid_backward(0.5, _ramp(1)),
    "tanh-backward-dtype-before-shape": lambda nn: nn.tanh_backward(
        _ramp(2, 3), np.ones((3, 2), complex)),
    "relu-backward-y-object": lambda nn: nn.relu_backward(np.ones((2, 3), object), _ramp(2, 3)),

    # Softmax and log-softmax: shapes.
    **{
        f"{name}-z-{ndim}d": (lambda nn, name=name, shape=shape: getattr(nn, name)(_ramp(*shape)))
        for name in ["softmax", "log_softmax"]
        for ndim, shape in [(0, ()), (1, (4,)), (3, (2, 3, 4))]
    },
    "softmax-z-none": lambda nn: nn.softmax(None),

    # Cross-entropy: reduction, checked before anything else.
    **{
        f"cross-entropy-reduction-{label}": (
            lambda nn, reduction=reduction: nn.softmax_cross_entropy(
                _ramp(2, 3), np.array([0, 1]), reduction=reduction))
        for label, reduction in [("avg", "avg"), ("upper-case", "MEAN"), ("empty", ""),
                                 ("none-object", None), ("int", 1), ("bytes", b"mean"),
                                 ("tuple", ("mean",))]
    },
    "cross-entropy-reduction-before-targets": lambda nn: nn.softmax_cross_entropy(
        np.ones((2, 3), complex), np.array([True, False]), reduction="avg"),

    # Cross-entropy: target types.
    "cross-entropy-bool-labels": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3), np.array([True, False])),
    "cross-entropy-bool-matrix": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3), np.eye(2, 3, dtype=bool)),
    "cross-entropy-float64-labels": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3), np.array([0.0, 1.0])),
    "cross-entropy-float32-labels": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3), np.array([0.0, 1.0], np.float32)),
    "cross-entropy-float16-labels": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3), np.array([0.0, 1.0], np.float16)),
    "cross-entropy-list-of-float-labels": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3), [0.0, 1.0]),
    "cross-entropy-targets-none": lambda nn: nn.softmax_cross_entropy(_ramp(2, 3), None),
    "cross-entropy-targets-bool-before-z-dtype": lambda nn: nn.softmax_cross_entropy(
        np.ones((2, 3), object), np.array([True, False])),
    "cross-entropy-targets-dtype-before-z-dtype": lambda nn: nn.softmax_cross_entropy(
        np.ones((2, 3), object), np.ones((2, 3), complex)),
    **{
        f"cross-entropy-targets-{kind}": (
            lambda nn, make=make: nn.softmax_cross_entropy(_ramp(2, 3), make((2, 3))))
        for kind, make in UNSUPPORTED_ARRAYS.items()
    },
    **{
        f"cross-entropy-labels-{kind}": (
            lambda nn, make=make: nn.softmax_cross_entropy(_ramp(2, 3), make((2,))))
        for kind, make in UNSUPPORTED_ARRAYS.items()
    },

    # Cross-entropy: z.
    "cross-entropy-z-1d-labels": lambda nn: nn.softmax_cross_entropy(_ramp(3), np.array([0])),
    "cross-entropy-z-3d-labels": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3, 1), np.array([0, 1])),
    "cross-entropy-z-0d-labels": lambda nn: nn.softmax_cross_entropy(1.0, np.array([0])),
    "cross-entropy-z-1d-probabilities": lambda nn: nn.softmax_cross_entropy(
        _ramp(3), _ramp(3).reshape(1, 3)),
    "cross-entropy-z-3d-probabilities": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3, 1), _ramp(2, 3, 1)),
    "cross-entropy-z-complex-labels": lambda nn: nn.softmax_cross_entropy(
        np.ones((2, 3), complex), np.array([0, 1])),
    "cross-entropy-z-object-probabilities": lambda nn: nn.softmax_cross_entropy(
        np.ones((2, 3), object), _ramp(2, 3)),
    "cross-entropy-z-dtype-before-label-range": lambda nn: nn.softmax_cross_entropy(
        np.ones((2, 3), complex), np.array([0, 9])),
    "cross-entropy-z-ndim-before-label-range": lambda nn: nn.softmax_cross_entropy(
        _ramp(3), np.array([9])),

    # Cross-entropy: target shapes.
    "cross-entropy-labels-2d": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3), np.array([[0], [1]])),
    "cross-entropy-labels-0d": lambda nn: nn.softmax_cross_entropy(_ramp(2, 3), np.array(1)),
    "cross-entropy-labels-too-short": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3), np.array([0])),
    "cross-entropy-labels-too-long": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3), np.array([0, 1, 2])),
    "cross-entropy-labels-for-empty-batch": lambda nn: nn.softmax_cross_entropy(
        _ramp(0, 3), np.array([0])),
    "cross-entropy-labels-shape-before-range": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3), np.array([9, 9, 9])),
    "cross-entropy-probabilities-wrong-columns": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3), np.full((2, 4), 0.25)),
    "cross-entropy-probabilities-wrong-rows": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3), np.full((3, 3), 0.25)),
    "cross-entropy-probabilities-transposed": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3), np.full((3, 2), 0.25)),
    "cross-entropy-probabilities-3d": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3), np.full((2, 3, 1), 0.25)),
    "cross-entropy-probabilities-0d": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3), np.float64(0.5)),

    # Cross-entropy: label range, checked before any computation.
    "cross-entropy-first-bad-label": lambda nn: nn.softmax_cross_entropy(
        _ramp(4, 3), np.array([0, 7, -1, 3])),
    "cross-entropy-bad-label-with-nan-logits": lambda nn: nn.softmax_cross_entropy(
        np.full((2, 3), np.nan), np.array([0, 3])),
    "cross-entropy-labels-no-classes": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 0), np.array([0, 0])),
    "cross-entropy-uint64-above-int64-max": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3), np.array([1, 2**63 + 5], np.uint64)),
    "cross-entropy-uint64-max": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3), np.array([np.iinfo(np.uint64).max, 0], np.uint64)),
    "cross-entropy-int64-min": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3), np.array([0, np.iinfo(np.int64).min])),
    "cross-entropy-byteswapped-bad-label": lambda nn: nn.softmax_cross_entropy(
        _ramp(3, 3), np.array([0, 1, 300], ">i4")),
    "cross-entropy-strided-bad-label": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3), np.array([0, 5, 3, 1])[::2]),
    "cross-entropy-list-bad-label": lambda nn: nn.softmax_cross_entropy(_ramp(2, 3), [0, 3]),
}

# Labels of every integer type code: one too large, and for signed types one negative.
for _name, _dtype in INTEGER_DTYPES.items():
    ERROR_CASES[f"cross-entropy-label-equal-to-classes-{_name}"] = (
        lambda nn, dtype=_dtype: nn.softmax_cross_entropy(
            _ramp(3, 3), np.array([0, 3, 1], dtype=dtype)))
    ERROR_CASES[f"cross-entropy-label-maximum-{_name}"] = (
        lambda nn, dtype=_dtype: nn.softmax_cross_entropy(
            _ramp(2, 3), np.array([1, np.iinfo(dtype).max], dtype=dtype)))
    if _dtype.kind == "i":
        ERROR_CASES[f"cross-entropy-label-negative-{_name}"] = (
            lambda nn, dtype=_dtype: nn.softmax_cross_entropy(
                _ramp(3, 3), np.array([2, -1, 0], dtype=dtype)))
        ERROR_CASES[f"cross-entropy-label-minimum-{_name}"] = (
            lambda nn, dtype=_dtype: nn.softmax_cross_entropy(
                _ramp(1, 3), np.array([np.iinfo(dtype).min], dtype=dtype)))

# Unsupported dtypes for every array argument of the element-wise functions and softmax.
for _kind, _make in UNSUPPORTED_ARRAYS.items():
    for _name in ELEMENTWISE:
        ERROR_CASES[f"{_name}-forward-x-{_kind}"] = (
            lambda nn, name=_name, make=_make: getattr(nn, f"{name}_forward")(make((2, 3))))
        ERROR_CASES[f"{_name}-backward-y-{_kind}"] = (
            lambda nn, name=_name, make=_make: getattr(nn, f"{name}_backward")(
                make((2, 3)), _ramp(2, 3)))
        ERROR_CASES[f"{_name}-backward-dy-{_kind}"] = (
            lambda nn, name=_name, make=_make: getattr(nn, f"{name}_backward")(
                _ramp(2, 3), make((2, 3))))
    for _name in ["softmax", "log_softmax"]:
        ERROR_CASES[f"{_name}-z-{_kind}"] = (
            lambda nn, name=_name, make=_make: getattr(nn, name)(make((2, 3))))
    ERROR_CASES[f"linear-x-{_kind}"] = (
        lambda nn, make=_make: nn.linear_forward(make((3, 5)), _ramp(5, 4)))
    ERROR_CASES[f"linear-backward-weight-{_kind}"] = (
        lambda nn, make=_make: nn.linear_backward(_ramp(3, 5), make((5, 4)), _ramp(3, 4)))

# Every out problem for every function that takes out.
for _name, (_call, _shape) in OUT_CALLS.items():
    for _problem in OUT_PROBLEMS:
        ERROR_CASES[f"{_name}-out-{_problem}"] = (
            lambda nn, call=_call, shape=_shape, problem=_problem: call(
                nn, _bad_out(problem, shape)))

# out that shares memory with an input of an element-wise function or softmax
# without being exactly that input's buffer.
for _name in ELEMENTWISE:
    ERROR_CASES[f"{_name}-forward-out-overlaps-x"] = (
        lambda nn, name=_name: (lambda pair: getattr(nn, f"{name}_forward")(
            pair[0], out=pair[1]))(_overlapping_pair((3, 4))))
    ERROR_CASES[f"{_name}-backward-out-overlaps-y"] = (
        lambda nn, name=_name: (lambda pair: getattr(nn, f"{name}_backward")(
            pair[0], _ramp(3, 4), out=pair[1]))(_overlapping_pair((3, 4))))
    ERROR_CASES[f"{_name}-backward-out-overlaps-dy"] = (
        lambda nn, name=_name: (lambda pair: getattr(nn, f"{name}_backward")(
            _ramp(3, 4), pair[1], out=pair[0]))(_overlapping_pair((3, 4))))
for _name in ["softmax", "log_softmax"]:
    ERROR_CASES[f"{_name}-out-overlaps-z"] = (
        lambda nn, name=_name: (lambda pair: getattr(nn, name)(pair[0], out=pair[1]))(
            _overlapping_pair((3, 4))))
    ERROR_CASES[f"{_name}-out-is-z-with-other-dtype"] = (
        lambda nn, name=_name: (lambda z: getattr(nn, name)(z, out=z))(
            _ramp(3, 4, dtype=np.float16)))


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_invalid_call_raises_same_error(case):
    compiled_kind, compiled = _outcome(ERROR_CASES[case], functional)
    reference_kind, expected = _outcome(ERROR_CASES[case], reference)

    assert reference_kind == "raised", f"reference returned {expected!r}"
    assert compiled_kind == "raised", f"functional returned {compiled!r}"
    assert type(compiled) is type(expected)
    assert str(compiled) == str(expected)


# ---------------------------------------------------------------------------
# Valid edge cases: the same result from both modules
# ---------------------------------------------------------------------------


def _result_dtype(result):
    """Return the dtype of the first floating-point array in ``result``, else float64."""
    items = result if isinstance(result, tuple) else (result,)
    for item in items:
        if isinstance(item, np.ndarray) and item.dtype.kind == "f":
            return item.dtype
    return np.dtype(np.float64)


def assert_same_result(compiled, expected, tolerance):
    """Assert that two results have the same structure, types, dtypes, shapes and values."""
    assert type(compiled) is type(expected)
    if isinstance(expected, tuple):
        assert len(compiled) == len(expected)
        for compiled_item, expected_item in zip(compiled, expected):
            assert_same_result(compiled_item, expected_item, tolerance)
    elif isinstance(expected, np.ndarray):
        assert compiled.dtype == expected.dtype
        assert compiled.shape == expected.shape
        assert compiled.flags.c_contiguous
        np.testing.assert_allclose(compiled, expected, equal_nan=True, **tolerance)
    elif isinstance(expected, float):
        np.testing.assert_allclose(compiled, expected, equal_nan=True, **tolerance)
    else:
        assert compiled == expected


def _in_place(function, *arguments, out_index=0):
    """Call ``function`` with out set to one of its arguments, and report identity and values."""
    buffer = arguments[out_index]
    returned = function(*arguments, out=buffer)
    return returned is buffer, buffer


# Rows of logits whose loss must be NaN, with their probability targets, next to
# ordinary rows. The 0 * log 0 = 0 rule must not hide a NaN row.
NAN_ROW_LOGITS = [
    [0.0, np.nan, 1.0],
    [0.0, np.nan, 1.0],
    [0.0, np.nan, 1.0],
    [np.nan, np.nan, np.nan],
    [np.inf, 0.0, 1.0],
    [np.inf, 0.0, 1.0],
    [-np.inf, -np.inf, -np.inf],
    [-np.inf, 0.0, -np.inf],
    [1.0, 2.0, 3.0],
    [3.0, -1.0, 0.5],
]
NAN_ROW_TARGETS = [
    [0.0, 0.0, 0.0],   # NaN row, every target 0
    [0.5, 0.0, 0.5],   # NaN at a target of 0
    [0.0, 1.0, 0.0],   # NaN at the only target
    [0.0, 0.0, 0.0],   # all NaN, every target 0
    [0.0, 0.0, 0.0],   # maximum +inf, every target 0
    [0.0, 0.3, 0.7],   # +inf at a target of 0
    [0.0, 0.0, 0.0],   # all -inf, every target 0
    [0.0, 1.0, 0.0],   # -inf only at targets of 0, so the loss is finite
    [0.0, 0.0, 0.0],   # finite row with every target 0, so the loss is 0
    [0.2, 0.3, 0.5],
]
NAN_ROW_LABELS = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]

EDGE_CASES = {}

for _dtype in DTYPES:
    _d = _dtype_name(_dtype)
    for _reduction in REDUCTIONS:
        EDGE_CASES[f"cross-entropy-nan-rows-probabilities-{_d}-{_reduction}"] = (
            lambda nn, dtype=_dtype, reduction=_reduction: nn.softmax_cross_entropy(
                np.array(NAN_ROW_LOGITS, dtype), np.array(NAN_ROW_TARGETS, dtype),
                reduction=reduction))
        EDGE_CASES[f"cross-entropy-nan-rows-labels-{_d}-{_reduction}"] = (
            lambda nn, dtype=_dtype, reduction=_reduction: nn.softmax_cross_entropy(
                np.array(NAN_ROW_LOGITS, dtype), np.array(NAN_ROW_LABELS), reduction=reduction))
        EDGE_CASES[f"cross-entropy-empty-batch-labels-{_d}-{_reduction}"] = (
            lambda nn, dtype=_dtype, reduction=_reduction: nn.softmax_cross_entropy(
                np.empty((0, 4), dtype), np.empty(0, np.int64), reduction=reduction))
        EDGE_CASES[f"cross-entropy-empty-batch-uint8-labels-{_d}-{_reduction}"] = (
            lambda nn, dtype=_dtype, reduction=_reduction: nn.softmax_cross_entropy(
                np.empty((0, 4), dtype), np.empty(0, np.uint8), reduction=reduction))
        EDGE_CASES[f"cross-entropy-empty-batch-probabilities-{_d}-{_reduction}"] = (
            lambda nn, dtype=_dtype, reduction=_reduction: nn.softmax_cross_entropy(
                np.empty((0, 4), dtype), np.empty((0, 4), dtype), reduction=reduction))
        EDGE_CASES[f"cross-entropy-empty-everything-{_d}-{_reduction}"] = (
            lambda nn, dtype=_dtype, reduction=_reduction: nn.softmax_cross_entropy(
                np.empty((0, 0), dtype), np.empty((0, 0), dtype), reduction=reduction))
        EDGE_CASES[f"cross-entropy-no-classes-probabilities-{_d}-{_reduction}"] = (
            lambda nn, dtype=_dtype, reduction=_reduction: nn.softmax_cross_entropy(
                np.empty((3, 0), dtype), np.empty((3, 0), dtype), reduction=reduction))
        EDGE_CASES[f"cross-entropy-labels-one-class-{_d}-{_reduction}"] = (
            lambda nn, dtype=_dtype, reduction=_reduction: nn.softmax_cross_entropy(
                _ramp(3, 1, dtype=dtype), np.zeros(3, np.int8), reduction=reduction))

    for _name in ["softmax", "log_softmax"]:
        EDGE_CASES[f"{_name}-nan-rows-{_d}"] = (
            lambda nn, name=_name, dtype=_dtype: getattr(nn, name)(
                np.array(NAN_ROW_LOGITS, dtype)))
        for _shape in [(0, 4), (3, 0), (0, 0)]:
            EDGE_CASES[f"{_name}-empty-{_shape[0]}x{_shape[1]}-{_d}"] = (
                lambda nn, name=_name, dtype=_dtype, shape=_shape: getattr(nn, name)(
                    np.empty(shape, dtype)))
        EDGE_CASES[f"{_name}-out-is-z-{_d}"] = (
            lambda nn, name=_name, dtype=_dtype: _in_place(
                getattr(nn, name), _ramp(3, 4, dtype=dtype)))

    for _shape in [(0, 3, 2), (4, 0, 2), (4, 3, 0), (0, 0, 0)]:
        _id = "x".join(map(str, _shape))
        EDGE_CASES[f"linear-forward-empty-{_id}-{_d}"] = (
            lambda nn, dtype=_dtype, shape=_shape: nn.linear_forward(
                _ramp(shape[0], shape[1], dtype=dtype), _ramp(shape[1], shape[2], dtype=dtype),
                _ramp(shape[2], dtype=dtype)))
        EDGE_CASES[f"linear-forward-empty-no-bias-{_id}-{_d}"] = (
            lambda nn, dtype=_dtype, shape=_shape: nn.linear_forward(
                _ramp(shape[0], shape[1], dtype=dtype), _ramp(shape[1], shape[2], dtype=dtype)))
        EDGE_CASES[f"linear-backward-empty-{_id}-{_d}"] = (
            lambda nn, dtype=_dtype, shape=_shape: nn.linear_backward(
                _ramp(shape[0], shape[1], dtype=dtype), _ramp(shape[1], shape[2], dtype=dtype),
                _ramp(shape[0], shape[2], dtype=dtype)))
        EDGE_CASES[f"linear-backward-empty-no-dx-{_id}-{_d}"] = (
            lambda nn, dtype=_dtype, shape=_shape: nn.linear_backward(
                _ramp(shape[0], shape[1], dtype=dtype), _ramp(shape[1], shape[2], dtype=dtype),
                _ramp(shape[0], shape[2], dtype=dtype), need_dx=False))
    EDGE_CASES[f"linear-forward-nan-and-inf-{_d}"] = (
        lambda nn, dtype=_dtype: nn.linear_forward(
            np.array([[np.nan, 1.0], [np.inf, 0.0], [1.0, 2.0]], dtype),
            np.array([[1.0, 0.0], [0.0, 1.0]], dtype), np.array([0.5, np.inf], dtype)))

    for _name in ELEMENTWISE:
        for _shape in [(0,), (0, 5), (4, 0), ()]:
            _id = "x".join(map(str, _shape)) or "0d"
            EDGE_CASES[f"{_name}-forward-empty-{_id}-{_d}"] = (
                lambda nn, name=_name, dtype=_dtype, shape=_shape: getattr(
                    nn, f"{name}_forward")(_ramp(*shape, dtype=dtype)))
            EDGE_CASES[f"{_name}-backward-empty-{_id}-{_d}"] = (
                lambda nn, name=_name, dtype=_dtype, shape=_shape: getattr(
                    nn, f"{name}_backward")(_ramp(*shape, dtype=dtype), _ramp(*shape, dtype=dtype)))
        EDGE_CASES[f"{_name}-forward-specials-{_d}"] = (
            lambda nn, name=_name, dtype=_dtype: getattr(nn, f"{name}_forward")(
                np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30], dtype)))
        EDGE_CASES[f"{_name}-backward-specials-{_d}"] = (
            lambda nn, name=_name, dtype=_dtype: getattr(nn, f"{name}_backward")(
                np.array([np.nan, 0.5, 0.0, -0.5, 1.0, 0.0, np.inf], dtype),
                np.array([1.0, np.nan, np.inf, 2.0, -np.inf, np.nan, 1.0], dtype)))
        EDGE_CASES[f"{_name}-forward-out-is-x-{_d}"] = (
            lambda nn, name=_name, dtype=_dtype: _in_place(
                getattr(nn, f"{name}_forward"), _ramp(3, 4, dtype=dtype)))
        EDGE_CASES[f"{_name}-backward-out-is-y-{_d}"] = (
            lambda nn, name=_name, dtype=_dtype: _in_place(
                getattr(nn, f"{name}_backward"), _ramp(3, 4, dtype=dtype) / 2,
                _ramp(4, 3, dtype=dtype).reshape(3, 4)))
        EDGE_CASES[f"{_name}-backward-out-is-dy-{_d}"] = (
            lambda nn, name=_name, dtype=_dtype: _in_place(
                getattr(nn, f"{name}_backward"), _ramp(3, 4, dtype=dtype) / 2,
                _ramp(4, 3, dtype=dtype).reshape(3, 4), out_index=1))

# Dtype promotion and conversion.
EDGE_CASES.update({
    "linear-float16-with-float32": lambda nn: nn.linear_forward(
        _ramp(3, 5, dtype=np.float16), _ramp(5, 4, dtype=np.float32), _ramp(4, dtype=np.float16)),
    "linear-int-with-float32": lambda nn: nn.linear_forward(
        np.arange(15).reshape(3, 5), _ramp(5, 4, dtype=np.float32)),
    "linear-bool-bias": lambda nn: nn.linear_forward(
        _ramp(3, 5, dtype=np.float32), _ramp(5, 4, dtype=np.float32), np.ones(4, bool)),
    "linear-longdouble": lambda nn: nn.linear_forward(
        _ramp(3, 5, dtype=np.longdouble), _ramp(5, 4, dtype=np.float32)),
    "linear-python-lists": lambda nn: nn.linear_forward([[1, 2]], [[1.0], [2.0]], [0.5]),
    "linear-backward-float16": lambda nn: nn.linear_backward(
        _ramp(3, 5, dtype=np.float16), _ramp(5, 4, dtype=np.float16),
        _ramp(3, 4, dtype=np.float16)),
    "linear-backward-mixed": lambda nn: nn.linear_backward(
        _ramp(3, 5, dtype=np.float32), _ramp(5, 4), np.ones((3, 4), np.int8)),
    "sigmoid-forward-bool": lambda nn: nn.sigmoid_forward(np.array([True, False])),
    "tanh-forward-int8": lambda nn: nn.tanh_forward(np.arange(-3, 3, dtype=np.int8)),
    "relu-forward-float16": lambda nn: nn.relu_forward(_ramp(2, 3, dtype=np.float16)),
    "relu-forward-python-float": lambda nn: nn.relu_forward(-2.5),
    "sigmoid-backward-float16-and-float32": lambda nn: nn.sigmoid_backward(
        _ramp(2, 3, dtype=np.float16), _ramp(2, 3, dtype=np.float32)),
    "tanh-backward-float32-and-int": lambda nn: nn.tanh_backward(
        _ramp(2, 3, dtype=np.float32), np.ones((2, 3), np.int32)),
    "softmax-int": lambda nn: nn.softmax(np.arange(6).reshape(2, 3)),
    "log-softmax-float16": lambda nn: nn.log_softmax(_ramp(2, 3, dtype=np.float16)),
    "cross-entropy-float16-z-labels": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3, dtype=np.float16), np.array([2, 0], np.uint16)),
    "cross-entropy-float32-z-float64-probabilities": lambda nn: nn.softmax_cross_entropy(
        _ramp(2, 3, dtype=np.float32), np.full((2, 3), 1 / 3)),
    "cross-entropy-int-z-float32-probabilities": lambda nn: nn.softmax_cross_entropy(
        np.arange(6).reshape(2, 3), np.full((2, 3), 0.5, np.float32), reduction="none"),
    "cross-entropy-python-lists": lambda nn: nn.softmax_cross_entropy([[0.0, 0.0]], [1]),
    "cross-entropy-unnormalized-probabilities": lambda nn: nn.softmax_cross_entropy(
        _ramp(3, 4), np.abs(_ramp(3, 4)) * 2, reduction="none"),
    # Layouts that are converted once.
    "linear-fortran-and-byteswapped": lambda nn: nn.linear_forward(
        np.asfortranarray(_ramp(3, 5)), _ramp(5, 4).astype(">f8"), _ramp(8)[::2]),
    "softmax-transposed": lambda nn: nn.softmax(_ramp(4, 3).T),
    "cross-entropy-byteswapped-labels": lambda nn: nn.softmax_cross_entropy(
        _ramp(3, 4), np.array([3, 0, 1], ">u2"), reduction="none"),
    "cross-entropy-strided-labels": lambda nn: nn.softmax_cross_entropy(
        _ramp(3, 4), np.array([3, 9, 0, 9, 1])[::2], reduction="none"),
    "sigmoid-out-is-int-input-bytes": lambda nn: (lambda x: (
        nn.sigmoid_forward(x, out=x.view(np.float64)), x))(np.arange(6, dtype=np.int64)),
})

# Valid labels of every integer type code.
for _name, _dtype in INTEGER_DTYPES.items():
    EDGE_CASES[f"cross-entropy-labels-{_name}"] = (
        lambda nn, dtype=_dtype: nn.softmax_cross_entropy(
            _ramp(4, 3, dtype=np.float32), np.array([2, 0, 1, 2], dtype=dtype),
            reduction="none"))


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_edge_case_gives_same_result(case):
    compiled_kind, compiled = _outcome(EDGE_CASES[case], functional)
    reference_kind, expected = _outcome(EDGE_CASES[case], reference)

    assert reference_kind == "returned", f"reference raised {expected!r}"
    assert compiled_kind == "returned", f"functional raised {compiled!r}"
    assert_same_result(compiled, expected, TOLERANCES[_result_dtype(expected)])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_infinite_row_losses_give_same_result(reduction):
    z = np.array([[-np.inf, 0.0], [-np.inf, 0.0]])
    targets = np.array([[1.0, 0.0], [-1.0, 0.0]])

    compiled = functional.softmax_cross_entropy(z, targets, reduction=reduction)
    expected = reference.softmax_cross_entropy(z, targets, reduction=reduction)

    assert_same_result(compiled, expected, TOLERANCES[np.dtype(np.float64)])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_float32_loss_sum_overflow_gives_same_result(reduction):
    # float32 can represent each row loss 3e38, but not their sum 6e38.
    z = np.array([[1e38, -2e38], [1e38, -2e38]], dtype=np.float32)
    labels = np.array([1, 1])

    expected = reference.softmax_cross_entropy(z, labels, reduction=reduction)
    compiled = functional.softmax_cross_entropy(z, labels, reduction=reduction)

    assert_same_result(compiled, expected, TOLERANCES[np.dtype(np.float32)])


def _first_row_loss(loss):
    """Return the loss of row 0 for reduction "none", else the reduced loss."""
    return float(loss[0]) if isinstance(loss, np.ndarray) else loss


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_name)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nan_row_zero_targets_nan(dtype, reduction):
    z = np.array([[0.0, np.nan, 1.0], [1.0, 2.0, 3.0]], dtype)
    targets = np.array([[0.0, 0.0, 0.0], [0.2, 0.3, 0.5]], dtype)

    compiled_loss, compiled_dz = functional.softmax_cross_entropy(z, targets, reduction=reduction)
    expected_loss, expected_dz = reference.softmax_cross_entropy(z, targets, reduction=reduction)

    assert math.isnan(_first_row_loss(compiled_loss))
    assert math.isnan(_first_row_loss(expected_loss))
    assert np.all(np.isnan(compiled_dz[0]))
    assert np.all(np.isnan(expected_dz[0]))
    assert np.all(np.isfinite(compiled_dz[1]))
    assert np.all(np.isfinite(expected_dz[1]))


def test_nan_rows_match_torch():
    torch = pytest.importorskip("torch")
    # PyTorch multiplies a target of 0 by log p = -inf and returns NaN, where
    # nnback applies 0 * log 0 = 0, so the rows with -inf at a target of 0 and a
    # finite maximum are left out.
    compared_rows = [i for i, row in enumerate(NAN_ROW_LOGITS) if row != [-np.inf, 0.0, -np.inf]]
    z = np.array(NAN_ROW_LOGITS)[compared_rows]
    targets = np.array(NAN_ROW_TARGETS)[compared_rows]

    z_tensor = torch.tensor(z, requires_grad=True)
    torch_losses = torch.nn.functional.cross_entropy(z_tensor, torch.tensor(targets),
                                                     reduction="none")
    torch_losses.sum().backward()
    compiled_losses, compiled_dz = functional.softmax_cross_entropy(z, targets, reduction="none")
    expected_losses, expected_dz = reference.softmax_cross_entropy(z, targets, reduction="none")

    tolerance = TOLERANCES[np.dtype(np.float64)]
    np.testing.assert_allclose(expected_losses, torch_losses.detach().numpy(), equal_nan=True,
                               **tolerance)
    np.testing.assert_allclose(compiled_losses, torch_losses.detach().numpy(), equal_nan=True,
                               **tolerance)
    np.testing.assert_allclose(expected_dz, z_tensor.grad.numpy(), equal_nan=True, **tolerance)
    np.testing.assert_allclose(compiled_dz, z_tensor.grad.numpy(), equal_nan=True, **tolerance)


def test_blas_dimension_limit_is_compiled_only():
    # This is the one intended difference. BLAS takes 32-bit sizes, so only the
    # compiled path rejects a dimension above 2**31 - 1. Zero-size arrays make
    # the case cheap to build.
    x = np.empty((0, 2**31))
    weight = np.empty((2**31, 0))

    with pytest.raises(ValueError, match="BLAS limit of 2147483647"):
        functional.linear_forward(x, weight)
    y = reference.linear_forward(x, weight)

    assert y.shape == (0, 0)
