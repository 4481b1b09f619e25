"""Input generators and the pass criterion shared by the fuzz targets.

Every target is a Hypothesis test over ``st.data()``. The runner feeds it raw
byte buffers through ``fuzz_one_input``, so a buffer reproduces its input
exactly. A target raises :class:`FuzzFailure` when an input breaks the pass
criterion: the call must return, or raise one of the exception types that the
entry point documents for that input, and must leave the caller's arrays as
they were.
"""

import os
import traceback

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Settings for driving a target through fuzz_one_input: no example database, no
# deadline (the machine is shared and timing varies) and no health checks,
# which are meant for tests that Hypothesis generates itself.
FUZZ_SETTINGS = settings(
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)

# Dtypes of generated arrays, including ones that every entry point must reject.
DTYPES = (
    "float32", "float64", "float16", "longdouble", ">f4", ">f8",
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", ">i4",
    "bool", "complex64", "complex128", "object", "U3", "S3",
    "datetime64[s]", "timedelta64[ms]", "V4", "ab",
)
# The structured dtype that "ab" stands for.
_STRUCTURED = np.dtype([("a", "<f4"), ("b", "<i4")])

# Memory layouts of generated arrays, applied after the values are drawn.
LAYOUTS = (
    "c", "fortran", "strided", "reversed", "transposed", "broadcast", "unaligned",
    "readonly", "matrix", "masked",
)

SPECIAL_FLOATS = (
    0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 88.7, -88.7, 710.0, -745.2, 1e-45, 1e-310,
    3.4e38, -3.4e38, 1.7e308, float("inf"), float("-inf"), float("nan"),
)
SPECIAL_INTEGERS = (0, 1, 2, 3, -1, 127, 255, 2**31 - 1, 2**32, 2**63 - 1, -(2**63), 2**64 - 1)


class FuzzFailure(Exception):
    """An input that broke the pass criterion.

    ``signature`` identifies the failure for counting distinct failures: the
    entry point and the kind of failure, without values that change per input.
    """

    def __init__(self, signature, details):
        super().__init__(f"{signature}\n{details}")
        self.signature = signature
        self.details = details


def fuzz_target(function):
    """Wrap ``function(data)`` as a Hypothesis test that the runner can drive."""
    return FUZZ_SETTINGS(given(st.data())(function))


# ---------------------------------------------------------------------------
# Pass criterion
# ---------------------------------------------------------------------------


def _innermost_location(error):
    """Return "file:line" of the frame that raised ``error``."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "?"
    frame = frames[-1]
    return f"{os.path.basename(frame.filename)}:{frame.lineno}"


def call_checked(entry_point, function, allowed, *args, **kwargs):
    """Call ``function`` and return ("ok", result) or ("raised", exception).

    An exception whose type is not a subclass of one in ``allowed`` raises
    FuzzFailure with its type, location and traceback. With the environment
    variable NNBACK_FUZZ_VERBOSE set (as ``run.py --replay`` does), the call
    and its outcome are printed.
    """
    if os.environ.get("NNBACK_FUZZ_VERBOSE"):
        print(f"call {entry_point}(*{args!r}, **{kwargs!r})")
    try:
        return "ok", function(*args, **kwargs)
    except FuzzFailure:
        raise
    except allowed as error:
        return "raised", error
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt):
            raise
        signature = (
            f"{entry_point}: unexpected {type(error).__name__} at {_innermost_location(error)}"
        )
        raise FuzzFailure(signature, traceback.format_exc()) from error


class ArraySnapshot:
    """The bytes, shape and flags of the ndarrays in a call, to detect writes to them."""

    def __init__(self, values):
        self._entries = []
        for name, value in values.items():
            if isinstance(value, np.ndarray):
                self._entries.append((name, value, self._state(value)))

    @staticmethod
    def _state(array):
        # Subclasses such as np.matrix iterate over rows, so the plain ndarray is compared.
        plain = np.asarray(array)
        if plain.dtype.hasobject:
            # Object arrays compare by identity of their items.
            content = tuple(id(item) for item in plain.ravel(order="K"))
        else:
            content = np.ascontiguousarray(plain).view(np.uint8).tobytes()
        return array.shape, array.strides, array.flags.writeable, content

    def check(self, entry_point, exempt=()):
        """Raise FuzzFailure if an array changed, except those that share memory with ``exempt``."""
        for name, array, state in self._entries:
            if any(
                isinstance(other, np.ndarray) and np.may_share_memory(array, other)
                for other in exempt
            ):
                continue
            if self._state(array) != state:
                raise FuzzFailure(
                    f"{entry_point}: modified the caller's array {name}",
                    f"{name} has shape {array.shape}, dtype {array.dtype}, "
                    f"strides {array.strides}",
                )


# ---------------------------------------------------------------------------
# Arrays
# ---------------------------------------------------------------------------


def _resolve_dtype(name):
    return _STRUCTURED if name == "ab" else np.dtype(name)


# Arrays with more entries repeat a drawn block of this many values, because
# Hypothesis limits the size of one drawn list.
MAX_DRAWN_VALUES = 4096


def _draw_values(data, dtype, size):
    """Draw ``size`` values that numpy can store in ``dtype``, as a flat array."""
    if size == 0:
        return np.empty(0, dtype=dtype)
    if size > MAX_DRAWN_VALUES:
        return np.resize(_draw_values(data, dtype, MAX_DRAWN_VALUES), size)
    if dtype.kind == "O":
        pool = st.sampled_from([0, 1.5, None, "a", float("nan"), 2**70, (1, 2)])
        values = np.empty(size, dtype=object)
        for index in range(size):
            values[index] = data.draw(pool)
        return values
    if dtype.kind in "US":
        text = data.draw(st.lists(st.sampled_from(["", "a", "1.5", "nan", "xyz"]),
                                  min_size=size, max_size=size))
        return np.array(text, dtype=dtype)

    mode = data.draw(st.sampled_from(["special", "bytes", "small"]))
    if mode == "bytes" or dtype.kind in "mMV":
        raw = data.draw(st.binary(min_size=size * dtype.itemsize, max_size=size * dtype.itemsize))
        return np.frombuffer(raw, dtype=dtype).copy()
    if mode == "small":
        values = data.draw(st.lists(st.integers(-3, 3), min_size=size, max_size=size))
        with np.errstate(all="ignore"):
            return np.array(values).astype(dtype)
    pool = SPECIAL_FLOATS if dtype.kind in "fc" else SPECIAL_INTEGERS
    values = data.draw(st.lists(st.sampled_from(pool), min_size=size, max_size=size))
    with np.errstate(all="ignore"):
        if dtype.kind in "fc":
            return np.array(values, dtype=np.float64).astype(dtype)
        # Integers outside the dtype's range wrap around.
        return np.array([value % 2**64 for value in values], dtype=np.uint64).astype(dtype)


def draw_shape(data, hint=None, max_ndim=4):
    """Draw a shape: often ``hint`` (the shape an entry point expects), otherwise any small shape."""
    if hint is not None and data.draw(st.integers(0, 2)) > 0:
        return tuple(hint)
    ndim = data.draw(st.integers(0, max_ndim))
    return tuple(data.draw(st.sampled_from([0, 1, 1, 2, 3, 4, 7])) for _ in range(ndim))


def apply_layout(base, layout):
    """Return an array with the values of ``base`` (where the layout allows) in ``layout``."""
    if layout == "fortran":
        return np.asfortranarray(base)
    if layout == "strided" and base.ndim >= 1:
        wide = np.zeros(base.shape[:-1] + (2 * base.shape[-1],), dtype=base.dtype)
        view = wide[..., ::2]
        view[...] = base
        return view
    if layout == "reversed" and base.ndim >= 1:
        return np.ascontiguousarray(base[::-1])[::-1]
    if layout == "transposed":
        return np.ascontiguousarray(base.T).T
    if layout == "broadcast" and base.ndim >= 1 and base.shape[0] > 0:
        return np.broadcast_to(base[:1], base.shape)
    if layout == "unaligned" and base.dtype.itemsize > 1 and not base.dtype.hasobject:
        raw = np.zeros(base.nbytes + 1, dtype=np.uint8)[1:]
        view = raw.view(base.dtype).reshape(base.shape)
        view[...] = base
        return view
    if layout == "readonly":
        copy = base.copy()
        copy.flags.writeable = False
        return copy
    if layout == "matrix" and base.ndim == 2:
        return np.asmatrix(base)
    if layout == "masked":
        return np.ma.masked_array(base, mask=np.zeros(base.shape, dtype=bool))
    return base


def draw_array(data, shape_hint=None, dtype_hint=None, max_ndim=4):
    """Draw an ndarray of any dtype, shape, layout and values.

    ``shape_hint`` and ``dtype_hint`` are drawn more often than other shapes and
    dtypes, so that valid calls are frequent enough to reach the kernels.
    """
    if dtype_hint is not None and data.draw(st.booleans()):
        dtype = np.dtype(dtype_hint)
    else:
        dtype = _resolve_dtype(data.draw(st.sampled_from(DTYPES)))
    shape = draw_shape(data, shape_hint, max_ndim)
    size = int(np.prod(shape, dtype=np.int64))
    base = _draw_values(data, dtype, size).reshape(shape)
    layout = data.draw(st.sampled_from(LAYOUTS))
    return apply_layout(base, layout)


# Python objects that are not arrays, for the positions where an array is expected.
OBJECTS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.complex_numbers(),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.lists(st.floats(allow_nan=True), max_size=4),
    st.lists(st.lists(st.integers(-5, 5), max_size=3), max_size=3),
    st.tuples(st.integers(), st.text(max_size=2)),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.frozensets(st.integers(), max_size=3),
    st.sampled_from([object(), Ellipsis, slice(1, 2), np.float32(1.5), np.int64(-3),
                     np.bool_(True), np.complex64(1j), np.str_("x"), np.datetime64(1, "s"),
                     int, np.float32]),
)


def draw_argument(data, shape_hint=None, dtype_hint=None):
    """Draw an array (usually) or another Python object for an array argument."""
    if data.draw(st.integers(0, 5)) == 0:
        return data.draw(OBJECTS)
    return draw_array(data, shape_hint, dtype_hint)
