"""Input validation shared by ``nnback.functional`` and ``nnback.reference``.

Every helper here uses NumPy only and either returns a converted array or raises
one of three exceptions, with a message that names the argument, its value or
shape, and what was expected:

* ``TypeError`` for a dtype that cannot be computed (complex, object, string,
  datetime, void), for bool or floating-point class indices, and for an ``out``
  that is not a ``numpy.ndarray``;
* ``ValueError`` for a wrong ndim or shape, an invalid ``out`` array or reduction,
  and a dimension that does not fit the 32-bit integers of BLAS;
* ``IndexError`` for a class index outside ``[0, n_classes)``.

Dtype rules: float32 and float64 are computed natively, float16 is computed in
float32, and integer, bool and longdouble inputs are computed in float64. Several
floating-point inputs of one call are promoted to their common dtype. Conversion
happens once, in :func:`as_computation_array`, and never writes to the caller's
array.

The checks run on the arrays as given, before any conversion, so that a bad call
raises before it copies anything.
"""

from typing import Any

import numpy as np
from numpy.typing import NDArray

REDUCTIONS = ("mean", "sum", "none")

# BLAS takes its sizes and leading dimensions as 32-bit C ints.
MAX_BLAS_DIMENSION = 2**31 - 1

_FLOAT32 = np.dtype(np.float32)
_FLOAT64 = np.dtype(np.float64)


# ---------------------------------------------------------------------------
# Dtypes and conversion
# ---------------------------------------------------------------------------


def computation_dtype(name, array):
    """Return float32 or float64, the dtype that ``array`` is computed in.

    Raises TypeError for complex, object, string, datetime and void dtypes.
    """
    dtype = array.dtype
    # Native float32 and float64 dtypes are NumPy singletons: a fast exact test.
    if dtype is _FLOAT32 or dtype is _FLOAT64:
        return dtype
    if dtype.kind == "f":
        # float16 widens to float32, and longdouble narrows to float64.
        return _FLOAT32 if dtype.itemsize <= 4 else _FLOAT64
    if dtype.kind in "iub":
        return _FLOAT64
    raise TypeError(
        f"{name} has unsupported dtype {dtype}: expected a real floating-point, "
        f"integer or bool array"
    )


def common_dtype(named_arrays):
    """Return the common computation dtype of ``named_arrays``, a dict of name to array.

    Entries whose value is None are skipped.
    """
    # Every computation dtype is float32 or float64, so the promotion that
    # np.result_type would compute is float64 if any input is float64. This
    # loop is several times faster than np.result_type.
    common = _FLOAT32
    for name, array in named_arrays.items():
        if array is not None and computation_dtype(name, array) is _FLOAT64:
            common = _FLOAT64
    return common


def as_array(name, value) -> NDArray[Any]:
    """Return ``value`` as an ndarray, as ``np.asarray`` does.

    A ValueError from NumPy, as for a ragged nested list, is raised again with
    ``name`` in front of NumPy's message.
    """
    try:
        return np.asarray(value)
    except ValueError as error:
        raise ValueError(f"{name} cannot be converted to a NumPy array: {error}") from error


def as_computation_array(array, dtype) -> NDArray[Any]:
    """Return ``array`` as an aligned C-contiguous array of the native-byte-order ``dtype``.

    The array itself is returned when it already has that layout and dtype, so a
    read-only input stays read-only and is never copied. Otherwise a new array
    is returned, and the input is left unchanged. An array whose data is not
    aligned to its item size (a view at an odd byte offset) is copied, because
    the kernels read it through typed C pointers.
    """
    converted = np.asarray(array, dtype=dtype, order="C")
    if not converted.flags.aligned:
        converted = converted.copy()
    return converted


def as_native_labels(targets) -> NDArray[Any]:
    """Return the integer array ``targets`` as aligned, C-contiguous and in native byte order.

    The compiled label kernels read it through a typed C pointer, so a
    byte-swapped, strided or misaligned array is copied.
    """
    labels = np.ascontiguousarray(targets, dtype=targets.dtype.newbyteorder("="))
    if not labels.flags.aligned:
        labels = labels.copy()
    return labels


# ---------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------


def require_ndim(name, array, ndim, layout):
    """Raise ValueError unless ``array.ndim == ndim``. ``layout`` names the axes, as in "(B, C)"."""
    if array.ndim != ndim:
        raise ValueError(
            f"{name} must be a {ndim}-D array of shape {layout}, got shape {array.shape}"
        )


def require_same_shape(first_name, first, second_name, second):
    """Raise ValueError unless the two arrays have the same shape."""
    if first.shape != second.shape:
        raise ValueError(
            f"{first_name} and {second_name} must have the same shape, got "
            f"{first_name}.shape = {first.shape} and {second_name}.shape = {second.shape}"
        )


def require_blas_dimensions(name, array):
    """Raise ValueError if a dimension of ``array`` exceeds the 32-bit limit of BLAS."""
    for axis, size in enumerate(array.shape):
        if size > MAX_BLAS_DIMENSION:
            raise ValueError(
                f"{name} has shape {array.shape}: dimension {axis} has {size} entries, "
                f"more than the BLAS limit of {MAX_BLAS_DIMENSION}"
            )


def check_linear_shapes(x, weight, bias=None):
    """Raise ValueError unless x is (B, n_features), weight (n_features, n_outputs), bias (n_outputs,)."""
    require_ndim("x", x, 2, "(B, n_features)")
    require_ndim("weight", weight, 2, "(n_features, n_outputs)")
    if x.shape[1] != weight.shape[0]:
        raise ValueError(
            f"x has shape {x.shape} and weight has shape {weight.shape}: "
            f"x.shape[1] (n_features) must equal weight.shape[0]"
        )

    n_outputs = weight.shape[1]
    if bias is not None and bias.shape != (n_outputs,):
        raise ValueError(
            f"bias must have shape (n_outputs,) = ({n_outputs},) for weight of shape "
            f"{weight.shape}, got shape {bias.shape}"
        )


def check_linear_gradient_shape(x, weight, dy):
    """Raise ValueError unless dy has the shape (B, n_outputs) of the forward output."""
    require_ndim("dy", dy, 2, "(B, n_outputs)")
    expected = (x.shape[0], weight.shape[1])
    if dy.shape != expected:
        raise ValueError(
            f"dy must have shape (B, n_outputs) = {expected} for x of shape {x.shape} "
            f"and weight of shape {weight.shape}, got shape {dy.shape}"
        )


# ---------------------------------------------------------------------------
# Output buffers
# ---------------------------------------------------------------------------


def check_out(out, shape, dtype):
    """Raise unless ``out`` is None or a writable C-contiguous array of ``shape`` and ``dtype``.

    A non-ndarray raises TypeError, and every other mismatch raises ValueError.
    """
    if out is None:
        return
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray or None, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"out has shape {out.shape}, expected the result shape {tuple(shape)}")
    if out.dtype != dtype:
        raise ValueError(f"out has dtype {out.dtype}, expected the result dtype {dtype}")
    if not out.flags.c_contiguous:
        raise ValueError(
            f"out with strides {out.strides} is not C-contiguous: pass a C-contiguous "
            f"array such as np.empty({tuple(shape)}, dtype={dtype})"
        )
    if not out.flags.writeable:
        raise ValueError("out is read-only: pass a writable array")


def _is_same_buffer(first, second):
    """Return whether two arrays start at the same address with the same shape and strides."""
    return (
        first.shape == second.shape
        and first.strides == second.strides
        and first.__array_interface__["data"][0] == second.__array_interface__["data"][0]
    )


def check_out_overlap(out, named_inputs, *, allow_same_buffer):
    """Raise ValueError if ``out`` overlaps one of ``named_inputs`` (a dict of name to array).

    With ``allow_same_buffer``, ``out`` may be exactly an input's buffer (same start,
    shape and strides), as for an element-wise operation computed in place. Any
    other overlap raises, because the kernel would read entries it has already
    overwritten. Entries whose value is None are skipped.
    """
    if out is None:
        return
    for name, array in named_inputs.items():
        if array is None or not np.may_share_memory(out, array):
            continue
        if allow_same_buffer and _is_same_buffer(out, array):
            continue
        if allow_same_buffer:
            expected = f"pass {name} itself to compute in place, or a separate array"
        else:
            expected = "pass a separate array"
        raise ValueError(f"out overlaps {name} in memory: {expected}")


# ---------------------------------------------------------------------------
# Loss arguments
# ---------------------------------------------------------------------------


def check_flag(name, value):
    """Raise TypeError unless ``value`` is a bool or numpy.bool_.

    A string such as "no" or a non-empty array would otherwise be taken for
    its truth value, or fail with NumPy's "truth value ... is ambiguous".
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")


def check_reduction(reduction):
    """Raise ValueError unless ``reduction`` is "mean", "sum" or "none"."""
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of 'mean', 'sum' or 'none', got {reduction!r}")


def is_class_index_targets(targets):
    """Return whether ``targets`` contains class indices (True) or probabilities (False).

    Integer arrays are class indices and floating-point arrays are probabilities.
    Bool targets, 1-D floating-point targets and non-numeric targets raise TypeError.
    """
    kind = targets.dtype.kind
    if kind in "iu":
        return True
    if kind == "b":
        raise TypeError(
            "targets has dtype bool: pass class indices as an integer array of shape "
            "(B,) or probabilities as a floating-point array of shape (B, C)"
        )
    if kind == "f" and targets.ndim == 1:
        raise TypeError(
            f"targets is a 1-D array of dtype {targets.dtype}: class indices must have "
            f"an integer dtype, and probability targets must have the shape (B, C) of z"
        )
    if kind != "f":
        raise TypeError(
            f"targets has unsupported dtype {targets.dtype}: pass class indices as an "
            "integer array of shape (B,) or probabilities as a floating-point array of "
            "shape (B, C)"
        )
    return False


def check_class_index_shape(labels, z_shape):
    """Raise ValueError unless ``labels`` is 1-D with one entry per row of z."""
    n_rows = z_shape[0]
    if labels.ndim != 1:
        # Integer targets of z's shape are most likely one-hot rows in an integer dtype.
        hint = ""
        if labels.shape == tuple(z_shape):
            hint = "; pass probability (one-hot) targets as a floating-point array"
        raise ValueError(
            f"class-index targets must be a 1-D array of shape (B,) = ({n_rows},) for z "
            f"of shape {z_shape}, got shape {labels.shape}{hint}"
        )
    if labels.shape[0] != n_rows:
        raise ValueError(
            f"targets has {labels.shape[0]} class indices but z has {n_rows} rows: "
            f"expected shape ({n_rows},) for z of shape {z_shape}"
        )


def first_invalid_label(labels, n_classes):
    """Return the position of the first label outside ``[0, n_classes)``, or -1.

    The comparison is exact for every integer dtype, including uint64 labels above
    the int64 maximum.
    """
    if labels.dtype.kind == "u":
        out_of_range = labels >= np.uint64(n_classes)
    else:
        wide = labels.astype(np.int64, copy=False)
        out_of_range = (wide < 0) | (wide >= n_classes)
    positions = np.flatnonzero(out_of_range)
    return int(positions[0]) if positions.size else -1


def invalid_label_error(labels, position, z_shape):
    """Return the IndexError for the invalid label ``labels[position]``."""
    value = int(labels[position])
    return IndexError(
        f"targets[{position}] = {value} is not a valid class index for z of shape "
        f"{z_shape}: expected 0 <= label < {z_shape[1]}"
    )


def check_class_indices(labels, z_shape):
    """Raise unless ``labels`` is a 1-D integer array of length B with ``0 <= label < C``.

    A wrong shape raises ValueError, and the first label out of range raises
    IndexError naming its position, its value and the valid range.
    """
    check_class_index_shape(labels, z_shape)
    position = first_invalid_label(labels, z_shape[1])
    if position >= 0:
        raise invalid_label_error(labels, position, z_shape)


def check_probability_shape(probabilities, z_shape):
    """Raise ValueError unless probability targets have the shape of z."""
    if probabilities.shape != tuple(z_shape):
        raise ValueError(
            f"probability targets must have the shape of z, got targets.shape = "
            f"{probabilities.shape} and z.shape = {tuple(z_shape)}"
        )
