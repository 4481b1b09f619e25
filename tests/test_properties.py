"""Property tests of every function in nnback.functional against nnback.reference.

Hypothesis draws the shapes (every size may be 0) and the dtypes (float32,
float64 and mixes of the two). It draws values from several classes (moderate,
wide, subnormal, near the float maximum, NaN, infinities and signed zeros),
mixed within one array, and the memory layout of every input and ``out`` array. Each comparison states its
tolerance where it is defined.

The number of examples per property comes from the Hypothesis profile that
``tests/conftest.py`` loads: "dev" by default and "ci" when the environment
variable CI is "true".
"""

import functools
import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nnback import functional, reference

# Every call must run without NumPy warnings: overflow, inf - inf and the mean
# over an empty batch are IEEE results, not errors. Only RuntimeWarning is an
# error, because Hypothesis's own reporting may import modules that warn.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

FLOAT_DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]
ACTIVATIONS = ["sigmoid", "tanh", "relu"]
REDUCTIONS = ["mean", "sum", "none"]

# Both sigmoid_forward implementations are within a few ulp of the exact
# result. The compiled one is within 2.41 ulp (float32) and 2.17 ulp (float64),
# as _fastmath.h documents. NumPy's 1 / (1 + exp(-x)) was within 3.15 and 2.25
# ulp on 4 million inputs in [-800, 800], measured against long double with
# NumPy 2.4 on an x86-64 CPU with AVX-512. Two results that close to one exact value are at most the sum
# of the errors apart, plus 1 ulp where the exact value is next to a power of 2.
SIGMOID_MAX_ULPS = 7
# tanh: compiled within 2.50 and 2.53 ulp (_fastmath.h), NumPy's np.tanh within
# 1.35 and 1.16 ulp on the same inputs, plus 1 ulp at a power of 2.
TANH_MAX_ULPS = 5

# Subnormal results carry an absolute rounding error of up to half the
# smallest subnormal per rounding, which no relative tolerance covers. Each
# finite comparison allows this many smallest subnormals on top of its bound.
SUBNORMAL_SLACK = 4


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------

VALUE_CLASSES = ["moderate", "wide", "subnormal", "huge", "special", "any"]
FINITE_VALUE_CLASSES = ["moderate", "wide", "subnormal", "huge"]


@functools.cache
def value_strategies(dtype):
    """Return a dict of value class to a strategy of Python floats exact in ``dtype``."""
    info = np.finfo(dtype)
    width = info.bits
    largest = float(info.max)
    smallest_normal = float(info.smallest_normal)
    return {
        # The range where exp, sigmoid and tanh change fastest.
        "moderate": st.floats(-40, 40, width=width),
        "wide": st.floats(-1e4, 1e4, width=width),
        "subnormal": st.floats(-smallest_normal, smallest_normal, width=width),
        "huge": st.one_of(
            st.floats(largest / 16, largest, width=width),
            st.floats(-largest, -largest / 16, width=width),
        ),
        "special": st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0]),
        # Probability targets, with exact zeros.
        "probability": st.one_of(st.just(0.0), st.floats(0, 1, width=width)),
        # Any float of the dtype, NaN with any payload included.
        "any": st.floats(width=width),
    }


@st.composite
def float_values(draw, dtype, shape, classes=tuple(VALUE_CLASSES)):
    """Draw a C-contiguous array of ``dtype`` whose entries mix one to three value classes."""
    chosen = draw(st.lists(st.sampled_from(classes), min_size=1, max_size=3, unique=True))
    strategies = value_strategies(np.dtype(dtype))
    elements = st.one_of(*[strategies[name] for name in chosen])
    return draw(hnp.arrays(dtype, shape, elements=elements))


def storage_dtypes(computation_dtype, count):
    """Draw ``count`` storage dtypes whose common computation dtype is ``computation_dtype``.

    A float64 computation stores some inputs as float32, so the promotion is
    exercised, and at least one input stays float64.
    """
    if computation_dtype == np.float32:
        return st.just([computation_dtype] * count)
    single = st.sampled_from([np.dtype(np.float64)] * 3 + [np.dtype(np.float32)])
    return st.lists(single, min_size=count, max_size=count).map(
        lambda dtypes: dtypes[:-1] + [np.dtype(np.float64)] if np.float64 not in dtypes else dtypes
    )


# Batch, feature and output sizes: small, zero, and a few past the vector widths.
SIDES = st.one_of(st.integers(0, 7), st.sampled_from([16, 33]))
BATCHES = st.one_of(st.integers(0, 6), st.just(17))
# Classes: short rows are summed in order and rows of 16 or more in 16 double
# lanes, and log_softmax exponentiates in blocks of 256 entries.
CLASS_COUNTS = st.one_of(st.integers(0, 20), st.sampled_from([33, 256, 257, 300]))
ELEMENTWISE_SHAPES = st.one_of(
    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
    st.tuples(st.sampled_from([15, 16, 17, 31, 33, 64, 65, 100])),
)


# ---------------------------------------------------------------------------
# Memory layouts
# ---------------------------------------------------------------------------

INPUT_LAYOUTS = ["c", "fortran", "strided", "reversed", "offset", "misaligned", "readonly",
                 "byteswapped"]
# Sentinel byte that fills every buffer, so that a write outside an array shows.
SENTINEL = 0xA5


@dataclass
class Placed:
    """An array and the whole byte buffer that it lives in."""

    array: np.ndarray
    buffer: np.ndarray
    layout: str

    def __repr__(self):
        return f"place({self.array!r}, {self.layout!r})"

    def snapshot(self):
        return self.buffer.copy()

    def unchanged_since(self, snapshot):
        return np.array_equal(self.buffer, snapshot)


def place(values, layout, dtype=None):
    """Copy ``values`` into a new buffer with the named layout and return the Placed array.

    Every layout contains exactly the values given, in ``dtype`` (default: the dtype of
    values). "offset" starts 3 elements into its buffer and "misaligned" 1 byte in.
    """
    values = np.asarray(values)
    dtype = np.dtype(values.dtype if dtype is None else dtype)
    if layout == "byteswapped":
        dtype = dtype.newbyteorder("S")
    shape = values.shape
    itemsize = dtype.itemsize

    if layout == "strided":
        padded_shape = tuple(2 * side + 1 for side in shape)
    else:
        padded_shape = shape
    n_bytes = math.prod(padded_shape) * itemsize + 8 * itemsize
    buffer = np.full(max(n_bytes, 1), SENTINEL, dtype=np.uint8)

    start = {"offset": 3 * itemsize, "misaligned": 1}.get(layout, 0)
    base = np.ndarray(padded_shape, dtype=dtype, buffer=buffer, offset=start,
                      order="F" if layout == "fortran" else "C")
    if not shape:
        array = base
    elif layout == "strided":
        array = base[tuple(slice(1, None, 2) for _ in shape)]
    elif layout == "reversed":
        array = base[tuple(slice(None, None, -1) for _ in shape)]
    else:
        array = base
    array[...] = values
    if layout == "readonly":
        array.flags.writeable = False
    return Placed(array, buffer, layout)


def layouts():
    return st.sampled_from(INPUT_LAYOUTS)


def same_bits(first, second):
    """Return whether two arrays have the same shape, dtype and bytes."""
    first = np.asarray(first)
    second = np.asarray(second)
    return first.shape == second.shape and first.dtype == second.dtype \
        and first.tobytes() == second.tobytes()


def assert_inputs_unchanged(placed_inputs, snapshots):
    for name, placed in placed_inputs.items():
        assert placed.unchanged_since(snapshots[name]), f"{name} or its buffer was modified"


# ---------------------------------------------------------------------------
# Comparisons
# ---------------------------------------------------------------------------


def describe_mismatch(mask, actual, expected, tolerance=None):
    mask = np.atleast_1d(mask)
    actual = np.atleast_1d(actual)
    expected = np.atleast_1d(expected)
    if tolerance is not None:
        tolerance = np.atleast_1d(tolerance)
    lines = []
    for index in list(zip(*np.nonzero(mask)))[:5]:
        line = f"  at {tuple(int(i) for i in index)}: actual {actual[index]!r}, " \
               f"expected {expected[index]!r}"
        if tolerance is not None:
            line += f", tolerance {float(tolerance[index])!r}"
        lines.append(line)
    return f"{int(mask.sum())} entries:\n" + "\n".join(lines)


def assert_agrees(actual, expected, tolerance, *, uncertain=None, description="result"):
    """Assert that a compiled result matches the reference result.

    NaN positions and infinities must match exactly, except where ``uncertain``
    is true: there an intermediate may overflow depending on the order or
    precision of the arithmetic, so one result may be finite where the other is
    inf or NaN. Entries that are finite in both must differ by at most
    ``tolerance`` (an absolute bound, broadcast to the shape). A tolerance of 0
    also requires equal signs of zero.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{description}: shape {actual.shape} != {expected.shape}"

    wide_actual = actual.astype(np.longdouble)
    wide_expected = expected.astype(np.longdouble)
    certain = np.ones(actual.shape, dtype=bool)
    if uncertain is not None:
        certain &= ~np.broadcast_to(uncertain, actual.shape)

    nan_mismatch = certain & (np.isnan(wide_actual) != np.isnan(wide_expected))
    assert not nan_mismatch.any(), \
        f"{description}: NaN positions differ in " + describe_mismatch(nan_mismatch, actual, expected)

    one_infinite = np.isinf(wide_actual) | np.isinf(wide_expected)
    infinity_mismatch = certain & one_infinite & (wide_actual != wide_expected)
    assert not infinity_mismatch.any(), \
        f"{description}: infinities differ in " + describe_mismatch(infinity_mismatch, actual, expected)

    both_finite = np.isfinite(wide_actual) & np.isfinite(wide_expected)
    tolerance = np.broadcast_to(np.asarray(tolerance, dtype=np.longdouble), actual.shape)
    with np.errstate(over="ignore", invalid="ignore"):
        too_far = both_finite & ~(np.abs(wide_actual - wide_expected) <= tolerance)
    assert not too_far.any(), \
        f"{description}: values differ beyond the tolerance in " \
        + describe_mismatch(too_far, actual, expected, tolerance)

    exact = both_finite & (tolerance == 0)
    sign_mismatch = exact & (np.signbit(actual) != np.signbit(expected))
    assert not sign_mismatch.any(), \
        f"{description}: signs of zero differ in " + describe_mismatch(sign_mismatch, actual, expected)


def ordered_integers(values):
    """Map floats to Python ints whose differences count the representable floats between them."""
    values = np.asarray(values)
    integer_type = np.int32 if values.dtype.itemsize == 4 else np.int64
    bits = values.view(integer_type).astype(np.int64)
    lowest = int(np.iinfo(integer_type).min)
    # Sign-magnitude bits: a negative float's bits grow with its magnitude.
    return [bit if bit >= 0 else lowest - bit for bit in bits.ravel().tolist()]


def assert_within_ulps(actual, expected, max_ulps, *, description="result"):
    """Assert equal NaN positions, equal infinities and at most ``max_ulps`` apart elsewhere."""
    assert_agrees(actual, expected, np.inf, description=description)
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    finite = np.isfinite(actual) & np.isfinite(expected)
    distances = np.array(
        [abs(a - e) for a, e in zip(ordered_integers(actual[finite]),
                                     ordered_integers(expected[finite]))],
        dtype=object,
    )
    far = np.zeros(actual.shape, dtype=bool)
    far[finite] = distances > max_ulps if distances.size else False
    assert not far.any(), f"{description}: more than {max_ulps} ulp apart in " \
        + describe_mismatch(far, actual, expected)


def overflow_risk(bound, dtype, rounding_units):
    """Return where a sum of magnitudes ``bound`` (long double) may overflow ``dtype``.

    A rounded sum can exceed the exact sum of its terms' magnitudes by a relative
    ``rounding_units * eps``. Below that, no partial sum of any order can overflow.
    """
    info = np.finfo(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        margin = bound * (1 + 4 * rounding_units * np.longdouble(info.eps))
        return ~(margin < np.longdouble(info.max))


def finite_magnitude_sums(terms, axis):
    """Sum |term| over ``axis``, skipping the terms that are NaN or infinite."""
    with np.errstate(over="ignore", invalid="ignore"):
        magnitudes = np.where(np.isfinite(terms), np.abs(terms), 0)
        return magnitudes.sum(axis=axis)


def product_terms(left, right):
    """Return the long double products ``left[i, k] * right[k, j]``, shape (m, k, n).

    On x86-64 long double has a 15-bit exponent, so the product of two float64
    values never overflows. Infinities and NaN follow IEEE rules (0 * inf is NaN).
    """
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        return left.astype(np.longdouble)[:, :, None] * right.astype(np.longdouble)[None, :, :]


def matmul_tolerance(left, right, dtype, extra=None):
    """Return the tolerance and the overflow risk of ``left @ right (+ extra)`` in ``dtype``.

    A dot product of k terms, summed in any order with or without FMA, is within
    ``k * eps / 2 * sum |terms|`` of the exact value (the classical bound gamma_k).
    Two implementations are then within ``k * eps * sum |terms|`` of each other;
    one more term covers the bias, and one more the final rounding. The bound uses
    the finite terms only: an infinite or NaN term makes the result inf or NaN in
    every order, unless the finite terms overflow, which ``overflow_risk`` marks.
    """
    info = np.finfo(dtype)
    inner = left.shape[1]
    terms = product_terms(left, right)
    bound = finite_magnitude_sums(terms, axis=1)
    # Where long double is float64 (not on x86-64 Linux), a product of finite
    # factors can overflow to inf here. That entry then carries the overflow risk.
    finite_factors = np.isfinite(left)[:, :, None] & np.isfinite(right)[None, :, :]
    overflowed = (finite_factors & ~np.isfinite(terms)).any(axis=1)
    if extra is not None:
        bound = bound + finite_magnitude_sums(extra.astype(np.longdouble)[None, :, None], axis=2)
    units = inner + 2
    tolerance = units * np.longdouble(info.eps) * bound \
        + units * SUBNORMAL_SLACK * np.longdouble(info.smallest_subnormal)
    return tolerance, overflow_risk(bound, dtype, units) | overflowed


def column_sum_tolerance(values, dtype):
    """Return the tolerance and the overflow risk of ``values.sum(axis=0)`` in ``dtype``."""
    info = np.finfo(dtype)
    units = values.shape[0] + 2
    bound = finite_magnitude_sums(values.astype(np.longdouble), axis=0)
    tolerance = units * np.longdouble(info.eps) * bound
    return tolerance, overflow_risk(bound, dtype, units)


def without_zero_sign(values):
    """Return ``values`` with -0.0 replaced by +0.0."""
    return np.where(values == 0, np.zeros((), dtype=values.dtype), values)


def assert_result_array(result, shape, dtype, description="result"):
    assert isinstance(result, np.ndarray), f"{description} is a {type(result).__name__}"
    assert result.shape == tuple(shape), f"{description} has shape {result.shape}, expected {shape}"
    assert result.dtype == np.dtype(dtype), f"{description} has dtype {result.dtype}, expected {dtype}"
    assert result.flags.c_contiguous, f"{description} is not C-contiguous"


# ---------------------------------------------------------------------------
# Linear layer
# ---------------------------------------------------------------------------


@st.composite
def linear_inputs(draw):
    """Draw Placed x, weight, bias (or None) and dy, and the computation dtype."""
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    n_rows, n_features, n_outputs = draw(BATCHES), draw(SIDES), draw(SIDES)
    x_dtype, weight_dtype, bias_dtype, dy_dtype = draw(storage_dtypes(dtype, 4))
    x = draw(float_values(x_dtype, (n_rows, n_features)))
    weight = draw(float_values(weight_dtype, (n_features, n_outputs)))
    bias = draw(st.none() | float_values(bias_dtype, (n_outputs,)))
    dy = draw(float_values(dy_dtype, (n_rows, n_outputs)))
    placed = {"x": place(x, draw(layouts())), "weight": place(weight, draw(layouts())),
              "dy": place(dy, draw(layouts()))}
    if bias is not None:
        placed["bias"] = place(bias, draw(layouts()))
    computation = np.result_type(*[p.array.dtype.newbyteorder("=") for p in placed.values()
                                   if p is not placed["dy"]])
    return placed, computation


@given(linear_inputs())
def test_linear_forward_matches_reference(case):
    placed, dtype = case
    x = placed["x"].array
    weight = placed["weight"].array
    bias = placed["bias"].array if "bias" in placed else None
    snapshots = {name: p.snapshot() for name, p in placed.items()}

    y = functional.linear_forward(x, weight, bias)
    expected = reference.linear_forward(x, weight, bias)

    assert_inputs_unchanged(placed, snapshots)
    assert_result_array(y, (x.shape[0], weight.shape[1]), dtype, "y")
    tolerance, uncertain = matmul_tolerance(x, weight, dtype, extra=bias)
    assert_agrees(y, expected, tolerance, uncertain=uncertain, description="y")


@given(linear_inputs(), st.booleans())
def test_linear_backward_matches_reference(case, need_dx):
    placed, _ = case
    x = placed["x"].array
    weight = placed["weight"].array
    dy = placed["dy"].array
    dtype = np.result_type(*[a.dtype.newbyteorder("=") for a in (x, weight, dy)])
    snapshots = {name: p.snapshot() for name, p in placed.items()}

    dx, dweight, dbias = functional.linear_backward(x, weight, dy, need_dx=need_dx)
    expected_dx, expected_dweight, expected_dbias = reference.linear_backward(
        x, weight, dy, need_dx=need_dx)

    assert_inputs_unchanged(placed, snapshots)
    n_rows, n_features = x.shape
    n_outputs = weight.shape[1]
    if need_dx:
        assert_result_array(dx, (n_rows, n_features), dtype, "dx")
        tolerance, uncertain = matmul_tolerance(dy, weight.T, dtype)
        assert_agrees(dx, expected_dx, tolerance, uncertain=uncertain, description="dx")
    else:
        assert dx is None
    assert_result_array(dweight, (n_features, n_outputs), dtype, "dweight")
    tolerance, uncertain = matmul_tolerance(x.T, dy, dtype)
    assert_agrees(dweight, expected_dweight, tolerance, uncertain=uncertain, description="dweight")
    assert_result_array(dbias, (n_outputs,), dtype, "dbias")
    tolerance, uncertain = column_sum_tolerance(dy, dtype)
    assert_agrees(dbias, expected_dbias, tolerance, uncertain=uncertain, description="dbias")


# ---------------------------------------------------------------------------
# Element-wise activations
# ---------------------------------------------------------------------------


@st.composite
def elementwise_inputs(draw, n_inputs):
    """Draw ``n_inputs`` Placed arrays of one shape, and their computation dtype."""
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    shape = draw(ELEMENTWISE_SHAPES)
    dtypes = draw(storage_dtypes(dtype, n_inputs))
    arrays = [place(draw(float_values(d, shape)), draw(layouts())) for d in dtypes]
    computation = np.result_type(*[p.array.dtype.newbyteorder("=") for p in arrays])
    return arrays, computation


def tanh_backward_tolerance(y, dy, dtype):
    """Return the tolerance and overflow risk of ``dy * (1 - y * y)`` between two implementations.

    The compiled loop may contract ``1 - y * y`` into one fused multiply-add (GCC
    contracts by default when the CPU has FMA), which rounds once where NumPy
    rounds twice. Near |y| = 1 the subtraction cancels, so the difference is
    bounded by the magnitudes ``|dy| * (1 + y * y)``, not by the result.
    """
    info = np.finfo(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        wide_y = y.astype(np.longdouble)
        bound = np.abs(dy.astype(np.longdouble)) * (1 + wide_y * wide_y)
    bound = np.where(np.isfinite(bound), bound, np.longdouble(np.inf))
    tolerance = 3 * np.longdouble(info.eps) * bound \
        + SUBNORMAL_SLACK * np.longdouble(info.smallest_subnormal)
    return tolerance, overflow_risk(bound, dtype, 3)


@pytest.mark.parametrize("name", ACTIVATIONS)
@given(case=elementwise_inputs(1))
def test_activation_forward_matches_reference(name, case):
    (placed,), dtype = case
    x = placed.array
    snapshot = placed.snapshot()

    y = getattr(functional, f"{name}_forward")(x)
    expected = getattr(reference, f"{name}_forward")(x)

    assert placed.unchanged_since(snapshot), "x or its buffer was modified"
    assert_result_array(y, x.shape, dtype, "y")
    if name == "sigmoid":
        assert_within_ulps(y, expected, SIGMOID_MAX_ULPS, description="sigmoid(x)")
    elif name == "tanh":
        assert_within_ulps(y, expected, TANH_MAX_ULPS, description="tanh(x)")
    else:
        # max(0, x) is exact, but the sign of a zero result is unspecified.
        assert_agrees(without_zero_sign(y), without_zero_sign(expected), 0, description="relu(x)")


@pytest.mark.parametrize("name", ACTIVATIONS)
@given(case=elementwise_inputs(2))
def test_activation_backward_matches_reference(name, case):
    (placed_y, placed_dy), dtype = case
    y = placed_y.array
    dy = placed_dy.array
    snapshots = {"y": placed_y.snapshot(), "dy": placed_dy.snapshot()}

    dx = getattr(functional, f"{name}_backward")(y, dy)
    expected = getattr(reference, f"{name}_backward")(y, dy)

    assert_inputs_unchanged({"y": placed_y, "dy": placed_dy}, snapshots)
    assert_result_array(dx, y.shape, dtype, "dx")
    if name == "tanh":
        tolerance, uncertain = tanh_backward_tolerance(y, dy, dtype)
        assert_agrees(dx, expected, tolerance, uncertain=uncertain, description="tanh dx")
    else:
        # dy * y * (1 - y) and dy * mask are the same IEEE operations in the same
        # order in both implementations, with no multiply-add to contract, so the
        # results are identical, NaN positions and signs of zero included.
        assert_agrees(dx, expected, 0, description=f"{name} dx")


# ---------------------------------------------------------------------------
# Softmax and log-softmax
# ---------------------------------------------------------------------------


@st.composite
def logits(draw, dtype=None, classes=tuple(VALUE_CLASSES)):
    """Draw Placed logits z of shape (B, C)."""
    if dtype is None:
        dtype = draw(st.sampled_from(FLOAT_DTYPES))
    shape = (draw(BATCHES), draw(CLASS_COUNTS))
    return place(draw(float_values(dtype, shape, classes)), draw(layouts()))


def softmax_tolerance(p, log_p, dtype):
    """Return the tolerance between two softmax results near the reference ``p``.

    The compiled kernel computes exp(z - m) / sum and NumPy exp(z - m - lse). The
    rounding of the exponent, relative ``eps * |log p|``, is amplified by exp into a
    relative error of the same size. The row sum adds up to C roundings (rows of
    fewer than 16 entries are summed in the dtype), and exp, the division and
    log-sum-exp add a few more.
    """
    info = np.finfo(dtype)
    n_classes = p.shape[1]
    with np.errstate(over="ignore", invalid="ignore"):
        wide_p = p.astype(np.longdouble)
        magnitude = np.where(wide_p > 0, 2 * np.abs(log_p.astype(np.longdouble)), 0)
        relative = np.longdouble(info.eps) * (n_classes + 8 + magnitude)
        return relative * wide_p + SUBNORMAL_SLACK * np.longdouble(info.smallest_subnormal)


def log_softmax_tolerance(log_p, dtype):
    """Return the absolute tolerance between two log-softmax results.

    Both compute ``(z - m) - log(sum)``. The sums differ by up to C roundings, which
    moves log(sum) by about C * eps, and the last subtraction rounds relative to
    ``|log p|``.
    """
    info = np.finfo(dtype)
    n_classes = log_p.shape[1]
    with np.errstate(over="ignore", invalid="ignore"):
        magnitude = 2 * np.abs(log_p.astype(np.longdouble))
    return np.longdouble(info.eps) * (magnitude + n_classes + 8)


@given(logits())
def test_softmax_matches_reference(placed):
    z = placed.array
    dtype = z.dtype.newbyteorder("=")
    snapshot = placed.snapshot()

    p = functional.softmax(z)
    expected = reference.softmax(z)

    assert placed.unchanged_since(snapshot), "z or its buffer was modified"
    assert_result_array(p, z.shape, dtype, "p")
    tolerance = softmax_tolerance(expected, reference.log_softmax(z), dtype)
    assert_agrees(p, expected, tolerance, description="softmax(z)")


@given(logits())
def test_log_softmax_matches_reference(placed):
    z = placed.array
    dtype = z.dtype.newbyteorder("=")
    snapshot = placed.snapshot()

    log_p = functional.log_softmax(z)
    expected = reference.log_softmax(z)

    assert placed.unchanged_since(snapshot), "z or its buffer was modified"
    assert_result_array(log_p, z.shape, dtype, "log_p")
    assert_agrees(log_p, expected, log_softmax_tolerance(expected, dtype), description="log_softmax(z)")


@given(logits(classes=tuple(FINITE_VALUE_CLASSES)))
def test_softmax_rows_sum_to_one(placed):
    z = placed.array
    dtype = z.dtype.newbyteorder("=")
    n_classes = z.shape[1]

    p = functional.softmax(z)

    # p = e_j * (1 / S): C - 1 roundings in S, one in 1 / S and one per product.
    tolerance = np.finfo(dtype).eps * (n_classes + 4)
    for index, row in enumerate(p):
        if n_classes == 0:
            continue
        assert np.all(row >= 0), f"row {index} has negative entries: {row}"
        total = math.fsum(row.astype(np.float64))
        assert abs(total - 1) <= tolerance, f"row {index} sums to {total!r}"


# ---------------------------------------------------------------------------
# Softmax cross-entropy
# ---------------------------------------------------------------------------

INTEGER_DTYPES = sorted({np.dtype(code) for code in np.typecodes["AllInteger"]}, key=str)


@st.composite
def class_index_case(draw):
    """Draw Placed logits (B, C) and Placed class indices (B,) of any integer dtype."""
    z = draw(logits())
    n_rows, n_classes = z.array.shape
    if n_classes == 0:
        # No label is valid without classes, so only an empty batch can be drawn.
        z = place(np.zeros((0, 0), dtype=z.array.dtype.newbyteorder("=")), "c")
        n_rows = 0
    label_dtype = draw(st.sampled_from(INTEGER_DTYPES))
    high = min(n_classes - 1, int(np.iinfo(label_dtype).max))
    labels = draw(hnp.arrays(label_dtype, (n_rows,), elements=st.integers(0, max(high, 0))))
    return z, place(labels, draw(layouts()))


@st.composite
def probability_case(draw):
    """Draw Placed logits (B, C) and Placed probability targets of the same shape."""
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    z_dtype, target_dtype = draw(storage_dtypes(dtype, 2))
    z = draw(logits(z_dtype))
    if draw(st.booleans()):
        classes = ("probability",)
    else:
        classes = ("probability", "moderate", "subnormal", "huge", "special", "any")
    targets = draw(float_values(target_dtype, z.array.shape, classes))
    return z, place(targets, draw(layouts()))


def class_index_tolerances(z, labels, reduction, dtype):
    """Return the tolerances of the row losses and of dz for class-index targets.

    The row loss ``lse - s_c`` has the error of log-sum-exp (C roundings of the
    sum) and one rounding relative to ``|loss|``. The gradient ``scale * (p - onehot)``
    has the error of p (see softmax_tolerance), one rounding of ``p - 1`` at the
    label, and the rounding of ``scale = 1 / B``.
    """
    info = np.finfo(dtype)
    eps = np.longdouble(info.eps)
    n_rows, n_classes = z.shape
    scale = 1 / n_rows if reduction == "mean" and n_rows > 0 else 1
    p = reference.softmax(z)
    log_p = reference.log_softmax(z)
    with np.errstate(over="ignore", invalid="ignore"):
        losses = -log_p[np.arange(n_rows), labels.astype(np.intp)].astype(np.longdouble)
        loss_tolerance = eps * (2 * np.abs(losses) + n_classes + 8)
        onehot = np.zeros(z.shape, dtype=np.longdouble)
        onehot[np.arange(n_rows), labels.astype(np.intp)] = 1
        gradient_tolerance = scale * (softmax_tolerance(p, log_p, dtype) + 3 * eps * onehot) \
            + SUBNORMAL_SLACK * np.longdouble(info.smallest_subnormal)
    return loss_tolerance, gradient_tolerance, losses, np.zeros(n_rows, dtype=bool)


def probability_tolerances(z, targets, reduction, dtype):
    """Return the tolerances of the row losses and of dz for probability targets, and where they hold.

    The row loss ``sum_j t_j (lse - s_j)`` has, per term, the error of log-sum-exp
    and two roundings relative to the term, and the sum in any order adds up to C
    roundings relative to the sum of the terms' magnitudes. The
    gradient ``scale * (p * sum(t) - t)`` has the error of p times ``|sum(t)|``, the
    error of sum(t) (C roundings of ``sum |t|``) and one rounding of each term.

    A row is uncertain when its finite terms may overflow, because float32 sums
    of huge targets overflow in NumPy's float32 sum but not in the compiled double
    sum. A row with an infinite target is uncertain too. There inf times a
    log-probability or probability that rounds to 0 in one implementation and not
    in the other is NaN in one and inf in the other. A NaN target makes the row
    NaN in both.
    """
    info = np.finfo(dtype)
    eps = np.longdouble(info.eps)
    n_rows, n_classes = z.shape
    scale = 1 / n_rows if reduction == "mean" and n_rows > 0 else 1
    p = reference.softmax(z).astype(np.longdouble)
    log_p = reference.log_softmax(z).astype(np.longdouble)
    t = np.asarray(targets, dtype=dtype).astype(np.longdouble)
    with np.errstate(over="ignore", invalid="ignore"):
        nonzero = t != 0
        magnitudes = np.where(nonzero, np.abs(t) * np.abs(log_p), 0)
        term_bound = np.where(nonzero, np.abs(t) * ((n_classes + 3) * np.abs(log_p)
                                                    + n_classes + 8), 0)
        finite_terms = np.isfinite(magnitudes)
        loss_bound = np.where(finite_terms, term_bound, 0).sum(axis=1)
        loss_magnitude = np.where(finite_terms, magnitudes, 0).sum(axis=1)
        loss_tolerance = eps * loss_bound + SUBNORMAL_SLACK * np.longdouble(info.smallest_subnormal)

        target_magnitude = finite_magnitude_sums(t, axis=1)
        target_sum = t.sum(axis=1, keepdims=True)
        gradient_bound = p * np.abs(target_sum) * (2 * np.abs(np.where(p > 0, log_p, 0))
                                                   + n_classes + 8) \
            + p * (n_classes + 4) * target_magnitude[:, None] + 2 * np.abs(t)
        gradient_tolerance = scale * eps * gradient_bound \
            + SUBNORMAL_SLACK * np.longdouble(info.smallest_subnormal) \
            * (1 + scale * np.abs(target_sum))

    infinite_target = np.isinf(t).any(axis=1) & ~np.isnan(t).any(axis=1)
    uncertain = infinite_target \
        | overflow_risk(loss_magnitude, dtype, n_classes + 2) \
        | overflow_risk(target_magnitude, dtype, n_classes + 2)
    return loss_tolerance, gradient_tolerance, loss_magnitude, uncertain


def check_cross_entropy(z_placed, targets_placed, reduction, tolerances):
    z = z_placed.array
    targets = targets_placed.array
    placed = {"z": z_placed, "targets": targets_placed}
    snapshots = {name: p.snapshot() for name, p in placed.items()}

    loss, dz = functional.softmax_cross_entropy(z, targets, reduction=reduction)
    expected_loss, expected_dz = reference.softmax_cross_entropy(z, targets, reduction=reduction)

    assert_inputs_unchanged(placed, snapshots)
    if targets.dtype.kind in "iu":
        dtype = z.dtype.newbyteorder("=")
    else:
        dtype = np.result_type(z.dtype.newbyteorder("="), targets.dtype.newbyteorder("="))
    n_rows = z.shape[0]
    z_wide = np.asarray(z, dtype=dtype)
    loss_tolerance, gradient_tolerance, row_magnitudes, uncertain_rows = tolerances(
        z_wide, targets, reduction, dtype)

    assert_result_array(dz, z.shape, dtype, "dz")
    assert_agrees(dz, expected_dz, gradient_tolerance, uncertain=uncertain_rows[:, None],
                  description="dz")

    if reduction == "none":
        assert_result_array(loss, (n_rows,), dtype, "loss")
        assert_agrees(loss, expected_loss, loss_tolerance, uncertain=uncertain_rows,
                      description="row losses")
        return loss, dz

    assert type(loss) is float, f"loss is a {type(loss).__name__}, expected float"
    # The reduced loss carries the row errors, the rounding of a sum of B terms in
    # any order (B * eps relative to the sum of magnitudes) and one rounding to
    # the dtype.
    eps = np.longdouble(np.finfo(dtype).eps)
    with np.errstate(over="ignore", invalid="ignore"):
        total_magnitude = np.where(np.isfinite(row_magnitudes), row_magnitudes, 0).sum()
        total_tolerance = np.where(np.isfinite(loss_tolerance), loss_tolerance, 0).sum() \
            + (n_rows + 2) * eps * total_magnitude
        if reduction == "mean" and n_rows > 0:
            total_tolerance /= n_rows
    uncertain = uncertain_rows.any() or bool(overflow_risk(total_magnitude, dtype, n_rows + 2))
    assert_agrees(np.float64(loss), np.float64(expected_loss), total_tolerance,
                  uncertain=uncertain, description=f"{reduction} loss")
    return loss, dz


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(case=class_index_case())
def test_cross_entropy_class_indices_match_reference(reduction, case):
    check_cross_entropy(*case, reduction, class_index_tolerances)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(case=probability_case())
def test_cross_entropy_probabilities_match_reference(reduction, case):
    check_cross_entropy(*case, reduction, probability_tolerances)


@st.composite
def finite_loss_case(draw):
    """Draw finite logits and either class indices or finite probability targets."""
    z = draw(logits(classes=tuple(FINITE_VALUE_CLASSES)))
    n_rows, n_classes = z.array.shape
    if draw(st.booleans()) and n_classes > 0:
        labels = draw(hnp.arrays(np.int64, (n_rows,), elements=st.integers(0, n_classes - 1)))
        return z.array, labels
    dtype = z.array.dtype.newbyteorder("=")
    targets = draw(float_values(dtype, (n_rows, n_classes),
                                ("probability", "moderate", "wide", "subnormal")))
    return z.array, targets


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(case=finite_loss_case())
def test_cross_entropy_gradient_rows_sum_to_zero(reduction, case):
    z, targets = case
    n_rows, n_classes = z.shape

    _, dz = functional.softmax_cross_entropy(z, targets, reduction=reduction)

    eps = np.finfo(dz.dtype).eps
    scale = 1 / n_rows if reduction == "mean" and n_rows > 0 else 1
    if targets.ndim == 1:
        target_magnitudes = np.ones(n_rows)
    else:
        target_magnitudes = np.abs(targets.astype(np.float64)).sum(axis=1)
    # d(sum_j l_j)/dz_i sums to sum(t_i) * (sum_j p_ij - 1) = 0. Each entry of dz and
    # the sums of p and t carry C + 4 roundings relative to the magnitudes involved.
    for index, row in enumerate(dz.astype(np.float64)):
        total = math.fsum(row)
        magnitude = math.fsum(np.abs(row)) + scale * target_magnitudes[index]
        bound = eps * (n_classes + 8) * magnitude \
            + n_classes * SUBNORMAL_SLACK * float(np.finfo(dz.dtype).smallest_subnormal)
        assert abs(total) <= bound, f"row {index} of dz sums to {total!r}, bound {bound!r}"


# ---------------------------------------------------------------------------
# out= arrays
# ---------------------------------------------------------------------------

OUT_LAYOUTS = ["c", "offset", "misaligned", "fortran", "strided", "reversed", "readonly",
               "byteswapped", "wrong_dtype", "wrong_shape", "list", "input", "overlap"]

# Function name, its array arguments, and whether out may be an input's own buffer.
OUT_FUNCTIONS = {
    "sigmoid_forward": (["x"], True),
    "tanh_forward": (["x"], True),
    "relu_forward": (["x"], True),
    "sigmoid_backward": (["y", "dy"], True),
    "tanh_backward": (["y", "dy"], True),
    "relu_backward": (["y", "dy"], True),
    "softmax": (["z"], True),
    "log_softmax": (["z"], True),
    "linear_forward": (["x", "weight", "bias"], False),
}


def argument_shapes(name, draw):
    """Draw the shapes of the array arguments of ``name`` and the shape of its result."""
    if name == "linear_forward":
        n_rows, n_features, n_outputs = draw(BATCHES), draw(SIDES), draw(SIDES)
        shapes = [(n_rows, n_features), (n_features, n_outputs), (n_outputs,)]
        return shapes, (n_rows, n_outputs)
    if name in ("softmax", "log_softmax"):
        shape = (draw(BATCHES), draw(CLASS_COUNTS))
    else:
        shape = draw(ELEMENTWISE_SHAPES)
    return [shape] * len(OUT_FUNCTIONS[name][0]), shape


def place_overlapping(values, out_shape, out_dtype):
    """Place ``values`` in C order and return it with an out array that starts inside it."""
    values = np.asarray(values)
    out_itemsize = np.dtype(out_dtype).itemsize
    out_bytes = math.prod(out_shape) * out_itemsize
    buffer = np.full(values.nbytes + out_bytes + 64, SENTINEL, dtype=np.uint8)
    array = np.ndarray(values.shape, dtype=values.dtype, buffer=buffer, offset=16)
    array[...] = values
    shift = (values.nbytes // 2) // out_itemsize * out_itemsize
    out = np.ndarray(out_shape, dtype=out_dtype, buffer=buffer, offset=16 + shift)
    return Placed(array, buffer, "c"), Placed(out, buffer, "overlap")


def expected_out_error(out, shape, dtype, inputs, allow_same_buffer):
    """Return the exception type that the documented out= contract requires, or None."""
    if not isinstance(out, np.ndarray):
        return TypeError
    if out.shape != tuple(shape) or out.dtype != dtype:
        return ValueError
    if not out.flags.c_contiguous or not out.flags.writeable:
        return ValueError
    for array in inputs:
        if array is None or not np.may_share_memory(out, array):
            continue
        same_buffer = out.shape == array.shape and out.strides == array.strides \
            and out.ctypes.data == array.ctypes.data
        if not (allow_same_buffer and same_buffer):
            return ValueError
    return None


@st.composite
def out_case(draw, name):
    """Draw the Placed inputs of ``name``, an out argument and its Placed buffer (or None)."""
    argument_names, allow_same_buffer = OUT_FUNCTIONS[name]
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    shapes, result_shape = argument_shapes(name, draw)
    dtypes = draw(storage_dtypes(dtype, len(shapes)))
    values = [draw(float_values(d, shape)) for d, shape in zip(dtypes, shapes)]
    placed = {argument: place(value, draw(layouts()))
              for argument, value in zip(argument_names, values)}
    computation = np.result_type(*[p.array.dtype.newbyteorder("=") for p in placed.values()])

    layout = draw(st.sampled_from(OUT_LAYOUTS))
    if layout == "list":
        return placed, np.zeros(result_shape).tolist(), None
    if layout == "input":
        chosen = draw(st.sampled_from(argument_names))
        return placed, placed[chosen].array, placed[chosen]
    if layout == "overlap":
        chosen = draw(st.sampled_from(argument_names))
        index = argument_names.index(chosen)
        placed[chosen], out_placed = place_overlapping(values[index], result_shape, computation)
        return placed, out_placed.array, out_placed
    if layout == "wrong_dtype":
        out_dtype = np.float32 if computation == np.float64 else np.float64
        out_placed = place(np.full(result_shape, 7.0, dtype=out_dtype), "c")
    elif layout == "wrong_shape":
        wrong_shape = result_shape[:-1] + (result_shape[-1] + 1,) if result_shape else (1,)
        out_placed = place(np.full(wrong_shape, 7.0, dtype=computation), "c")
    else:
        out_placed = place(np.full(result_shape, 7.0, dtype=computation), layout)
    return placed, out_placed.array, out_placed


def bytes_outside(placed, snapshot):
    """Return whether the buffer of a C-contiguous ``placed`` equals ``snapshot`` outside the array."""
    start = placed.array.ctypes.data - placed.buffer.ctypes.data
    outside = np.ones(placed.buffer.shape, dtype=bool)
    outside[start:start + placed.array.nbytes] = False
    return np.array_equal(placed.buffer[outside], snapshot[outside])


@pytest.mark.parametrize("name", list(OUT_FUNCTIONS))
@given(data=st.data())
def test_out_argument_follows_contract(name, data):
    placed, out, out_placed = data.draw(out_case(name), label="case")
    argument_names, allow_same_buffer = OUT_FUNCTIONS[name]
    function = getattr(functional, name)
    arguments = [placed[argument].array for argument in argument_names]
    dtype = np.result_type(*[a.dtype.newbyteorder("=") for a in arguments])
    result_shape = (arguments[0].shape[0], arguments[1].shape[1]) \
        if name == "linear_forward" else arguments[0].shape

    expected = function(*[np.array(a, copy=True) for a in arguments])
    error = expected_out_error(out, result_shape, dtype, arguments, allow_same_buffer)
    note(f"expected error: {error}")
    snapshots = {argument: p.snapshot() for argument, p in placed.items()}
    out_snapshot = out_placed.snapshot() if out_placed is not None else None

    if error is not None:
        with pytest.raises(error, match="out"):
            function(*arguments, out=out)
        assert_inputs_unchanged(placed, snapshots)
        if out_placed is not None:
            assert out_placed.unchanged_since(out_snapshot), "rejected out was modified"
        return

    result = function(*arguments, out=out)

    assert result is out, "the returned array is not out"
    assert same_bits(result, expected), "out differs from the result without out"
    assert bytes_outside(out_placed, out_snapshot), "bytes next to out were modified"
    # An input that shares its buffer with out is checked by bytes_outside above.
    unshared = {argument: p for argument, p in placed.items()
                if p.buffer is not out_placed.buffer}
    assert_inputs_unchanged(unshared, snapshots)


# ---------------------------------------------------------------------------
# Dtypes other than float32 and float64
# ---------------------------------------------------------------------------

# Converted as documented: integers and bool to float64, float16 to float32 and
# long double to float64.
CONVERTED_DTYPES = INTEGER_DTYPES + [np.dtype(np.bool_), np.dtype(np.float16),
                                     np.dtype(np.longdouble)]
REJECTED_DTYPES = [np.dtype(code) for code in
                   ["complex64", "complex128", "object", "U3", "S3", "M8[s]", "m8[s]", "V8"]]

# Array arguments of each function in the order of its signature.
ARGUMENTS = {
    "linear_forward": ["x", "weight", "bias"],
    "linear_backward": ["x", "weight", "dy"],
    "sigmoid_forward": ["x"],
    "tanh_forward": ["x"],
    "relu_forward": ["x"],
    "sigmoid_backward": ["y", "dy"],
    "tanh_backward": ["y", "dy"],
    "relu_backward": ["y", "dy"],
    "softmax": ["z"],
    "log_softmax": ["z"],
    "softmax_cross_entropy": ["z", "targets"],
}


def small_integer_arguments(name, draw):
    """Draw float64 arguments of ``name`` holding integers in [0, 3], exact in every dtype."""
    n_rows, n_features, n_outputs = draw(st.integers(0, 4)), draw(st.integers(0, 4)), \
        draw(st.integers(1, 4))
    shapes = {
        "linear_forward": [(n_rows, n_features), (n_features, n_outputs), (n_outputs,)],
        "linear_backward": [(n_rows, n_features), (n_features, n_outputs), (n_rows, n_outputs)],
        "softmax": [(n_rows, n_outputs)],
        "log_softmax": [(n_rows, n_outputs)],
        "softmax_cross_entropy": [(n_rows, n_outputs), (n_rows, n_outputs)],
    }.get(name, [(n_rows, n_features)] * len(ARGUMENTS[name]))
    return [draw(hnp.arrays(np.float64, shape, elements=st.integers(0, 3).map(float)))
            for shape in shapes]


def converted_dtype(dtype):
    if dtype.kind == "f":
        return np.dtype(np.float32) if dtype.itemsize <= 4 else np.dtype(np.float64)
    return np.dtype(np.float64)


def call(name, arguments):
    if name == "linear_backward":
        return functional.linear_backward(*arguments)
    return getattr(functional, name)(*arguments)


def outputs_of(result):
    if isinstance(result, tuple):
        return list(result)
    return [result]


@pytest.mark.parametrize("name", list(ARGUMENTS))
@given(data=st.data())
def test_other_dtypes_follow_contract(name, data):
    arguments = small_integer_arguments(name, data.draw)
    position = data.draw(st.integers(0, len(arguments) - 1), label="position")
    argument = ARGUMENTS[name][position]
    base_dtype = data.draw(st.sampled_from(FLOAT_DTYPES), label="other arguments' dtype")
    arguments = [a.astype(base_dtype) for a in arguments]
    new_dtype = data.draw(st.sampled_from(CONVERTED_DTYPES + REJECTED_DTYPES), label="dtype")

    if argument == "targets":
        # Integer targets are class indices of shape (B,), and float targets
        # probabilities of shape (B, C).
        if new_dtype.kind in "iub":
            arguments[1] = np.argmax(arguments[1], axis=1).astype(new_dtype) \
                if new_dtype.kind != "b" else np.ones(arguments[1].shape[0], dtype=bool)
        else:
            arguments[1] = arguments[1].astype(new_dtype)
    else:
        arguments[position] = arguments[position].astype(new_dtype)
    snapshot = arguments[position].copy()

    if new_dtype in REJECTED_DTYPES or (argument == "targets" and new_dtype.kind == "b"):
        with pytest.raises(TypeError, match=argument):
            call(name, arguments)
        return

    result = call(name, arguments)

    assert same_bits(arguments[position], snapshot), f"{argument} was modified"
    explicit = list(arguments)
    if argument == "targets" and new_dtype.kind in "iu":
        explicit[1] = arguments[1].astype(np.intp)
        float_arguments = explicit[:1]
    else:
        explicit[position] = arguments[position].astype(converted_dtype(new_dtype))
        float_arguments = explicit
    expected_dtype = np.result_type(*[a.dtype for a in float_arguments])
    expected = call(name, explicit)
    for index, (output, expected_output) in enumerate(zip(outputs_of(result),
                                                          outputs_of(expected))):
        if isinstance(expected_output, float):
            assert type(output) is float
            assert output == expected_output or (math.isnan(output) and math.isnan(expected_output))
            continue
        assert_result_array(output, expected_output.shape, expected_dtype, f"output {index}")
        assert same_bits(output, expected_output), \
            f"output {index} differs from the call with {argument} converted explicitly"
