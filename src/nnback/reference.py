r"""Pure NumPy reference implementation of the nnback functional API.

Each function has the name, signature, input checks and numerics that its compiled
counterpart in ``nnback.functional`` is specified to have. The code is written for
clarity, so it doubles as the executable specification of the math and as the
oracle that the tests compare the compiled kernels against.

Shapes
------
Arrays are row-major with the batch first: ``B`` rows, ``n_features`` inputs and
``n_outputs`` outputs per row, and ``C`` classes for the loss.

* ``x``: (B, n_features), ``weight``: (n_features, n_outputs), ``bias``: (n_outputs,)
* ``y`` and ``dy`` of a linear layer: (B, n_outputs)
* activations work element-wise on arrays of any shape
* logits ``z``: (B, C). ``targets``: class indices of shape (B,) or probabilities
  of shape (B, C).

Forward and backward formulas
-----------------------------
``dy`` is the gradient of a scalar loss L with respect to the output, and each
backward function returns the gradient with respect to its inputs.

Linear::

    y  = x @ weight + bias
    dx = dy @ weight.T           (B, n_features)
    dW = x.T @ dy                (n_features, n_outputs)
    db = dy.sum(axis=0)          (n_outputs,)

The bias is added to every row, so each bias entry receives the sum of its output
column over the batch. ``db`` has one entry per output, not one per row.

Sigmoid, tanh and ReLU use the forward output ``y`` in their backward pass::

    sigmoid:  y = 1 / (1 + exp(-x))                        dx = dy * y * (1 - y)
    tanh:     y = (exp(x) - exp(-x)) / (exp(x) + exp(-x))  dx = dy * (1 - y * y)
    ReLU:     y = max(0, x)                                dx = dy * (y > 0)

Softmax and log-softmax work row by row, with ``m_i = max_j z_ij``::

    p_ij     = exp(z_ij - m_i) / sum_k exp(z_ik - m_i)
    log p_ij = (z_ij - m_i) - log(sum_k exp(z_ik - m_i))

Softmax cross-entropy with probability targets ``t`` (B, C) has the per-row loss
``l_i = -sum_j t_ij * log p_ij``. Its gradient with respect to the logits is::

    dl_i/dz_ij = p_ij * sum_k t_ik - t_ij

which is ``p - t`` when the row of targets sums to 1. A class index ``c_i`` is the
one-hot row ``t_ij = [j == c_i]``, so ``l_i = logsumexp(z_i) - z_i[c_i]`` and
``dl_i/dz_i = p_i - onehot(c_i)``. The reduction ``"mean"`` returns
``sum_i l_i / B`` and the gradient divided by B. ``"sum"`` returns ``sum_i l_i``.
``"none"`` returns the vector ``l`` of shape (B,), with the gradient of
``sum_i l_i``. The loss is a Python float for ``"mean"`` and ``"sum"``: the row
losses are summed in float64, and the sum or mean is rounded to the computation
dtype.

Numerics
--------
``nnback.functional`` is specified to make the same choices:

* Sigmoid branches on the sign of x and evaluates ``1 / (1 + exp(-x))`` for
  ``x >= 0`` and ``e / (1 + e)`` with ``e = exp(x)`` for ``x < 0``. Neither branch
  can overflow, so ``sigmoid(+inf) = 1`` and ``sigmoid(-inf) = 0`` without warnings.
* ReLU's derivative at exactly ``y = 0`` is 0, so ``relu_backward`` passes no
  gradient through a unit whose output is 0.
* Backward passes evaluate their formulas as plain products, so NaN in ``y`` or in
  ``dy`` propagates to ``dx``. ``sigmoid_backward`` and ``tanh_backward`` return NaN
  wherever y or dy is NaN. ``relu_backward`` multiplies ``dy`` by the mask
  ``m = 1 if y > 0, 0 if y <= 0, NaN if y is NaN``, so it returns NaN wherever y is
  NaN, and also where ``y <= 0`` and dy is NaN or infinite (``0 * inf`` is NaN).
  ``linear_backward`` propagates NaN in x, weight or dy through its sums of
  products and its column sums.
* Softmax, log-softmax and the loss subtract the row maximum before ``exp``. The
  loss is computed in the log domain as log-sum-exp minus the target logit, never
  as ``log(softmax(z))``, and never clips. NaN anywhere in a row of z makes that
  row's p, log p, loss and gradient NaN. A row whose maximum is +inf, or whose
  entries are all -inf, gives NaN because ``inf - inf`` is NaN.
* Probability targets use ``0 * log 0 = 0``, so a target entry of exactly 0
  contributes no loss, even where its logit is -inf.
* For probability rows that do not sum to 1, the gradient is the true gradient of
  the loss above, ``p * sum_k t_ik - t_i``, not ``p - t``.
* A row of z that contains NaN has a NaN loss even where every target of the row
  is 0, because the rule ``0 * log 0 = 0`` covers ``log p = -inf``, not NaN.
* ``"mean"`` divides by B, for probability targets too. The mean over an empty
  batch (B == 0) is NaN, as 0/0 is, and raises no warning, and its gradient has
  shape (0, C). The sum over an empty batch is 0. With C == 0 and probability
  targets of shape (B, 0), every row loss is 0 (an empty sum). With C == 0 and
  class indices, every label is out of range.
* Overflow to inf, underflow to 0 and ``inf - inf = NaN`` are intended IEEE
  results, so the arithmetic runs under ``np.errstate`` and emits no
  RuntimeWarning. ``sigmoid_forward`` silences only underflow, because it never
  overflows.

Input handling
--------------
The arguments are checked by ``nnback._validation``, the module that
``nnback.functional`` uses, and in the same order, so both modules raise the same
exception with the same message for every invalid call. Each function checks
dtypes, then shapes, then ``out`` (the loss checks its reduction first and its
class indices last), and converts its inputs only after every check has passed.
The one difference is a limit of the compiled path: BLAS takes its
sizes as 32-bit integers, so ``nnback.functional`` rejects a linear layer with a
dimension above 2**31 - 1, and this module has no such limit.

float32 and float64 inputs are computed in their own precision. Other inputs are
converted once: float16 to float32, integer and bool to float64, and longdouble to
float64. Complex, object, string and datetime inputs raise TypeError. When a call
takes several floating-point inputs, they are promoted to their common dtype
(``np.result_type`` of the converted dtypes), and the outputs have that dtype.
Integer targets are class indices and take no part in the promotion. Float targets
are probabilities and must have the shape of z, and 1-D float targets raise
TypeError as float class indices. Bool targets raise TypeError.

Inputs other than ``out`` are never modified. Outputs are new C-contiguous arrays
unless ``out=`` is given, in which case the result is written into ``out`` and
``out`` is returned. ``out`` must be a writable C-contiguous array of the result's
shape and dtype. An element-wise function, softmax or log-softmax may write into
the buffer of its own input (``out=x``), but any other overlap of ``out`` with an
input raises ValueError, as it does in ``nnback.functional``, whose kernels would
read entries that they have already overwritten.
"""

from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from nnback import _validation as validation

__all__ = [
    "linear_forward",
    "linear_backward",
    "sigmoid_forward",
    "sigmoid_backward",
    "tanh_forward",
    "tanh_backward",
    "relu_forward",
    "relu_backward",
    "softmax",
    "log_softmax",
    "softmax_cross_entropy",
]

# A float32 or float64 array, the two dtypes that nnback computes in.
_FloatArray = NDArray[np.floating[Any]]


# ---------------------------------------------------------------------------
# Arithmetic and outputs shared by every function
# ---------------------------------------------------------------------------


def _ieee_arithmetic():
    """Silence NumPy warnings for overflow, underflow and NaN-producing operations.

    inf, 0 and NaN are the intended IEEE results, for example ``y + bias = inf``
    after overflow or ``inf - inf = NaN`` in a softmax row whose maximum is inf.
    """
    return np.errstate(over="ignore", under="ignore", invalid="ignore")


def _store(result, out):
    """Return ``result`` as an array, or copy it into ``out`` and return ``out``."""
    if out is None:
        # Ufuncs on 0-d arrays return NumPy scalars, so wrap them back into arrays.
        return np.asarray(result)
    out[...] = result
    return out


# ---------------------------------------------------------------------------
# Linear layer
# ---------------------------------------------------------------------------


def linear_forward(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    *,
    out: _FloatArray | None = None,
) -> _FloatArray:
    """Compute the affine map ``y = x @ weight + bias``.

    Parameters
    ----------
    x : array_like, shape (B, n_features)
        Input batch.
    weight : array_like, shape (n_features, n_outputs)
        Weight matrix. This is the transpose of PyTorch's layout.
    bias : array_like, shape (n_outputs,), optional
        Added to every row of ``x @ weight``. None means no bias.
    out : ndarray, shape (B, n_outputs), optional
        C-contiguous, writable array of the result dtype that receives ``y``. It
        must not overlap x, weight or bias.

    Returns
    -------
    y : ndarray, shape (B, n_outputs)
        Of the common computation dtype of the inputs. ``out`` if it was given.
        With n_features == 0 the product is an empty sum, so every row of y
        equals the bias (or 0).

    Raises
    ------
    TypeError
        If an input has a complex, object, string, datetime or void dtype, or
        ``out`` is not an ndarray.
    ValueError
        If x or weight is not 2-D, ``x.shape[1] != weight.shape[0]``, bias does
        not have shape (n_outputs,), or ``out`` has the wrong shape or dtype, is
        not C-contiguous, is read-only or overlaps an input.

    Examples
    --------
    >>> import numpy as np
    >>> from nnback import reference
    >>> x = np.array([[1.0, 2.0], [3.0, 4.0]])                # (B, n_features)
    >>> weight = np.array([[1.0, 0.0, -1.0], [0.5, 1.0, 2.0]])  # (n_features, n_outputs)
    >>> print(reference.linear_forward(x, weight, np.array([0.0, 1.0, 0.5])))
    [[2.  3.  3.5]
     [5.  5.  5.5]]
    """
    x = validation.as_array("x", x)
    weight = validation.as_array("weight", weight)
    if bias is not None:
        bias = validation.as_array("bias", bias)

    inputs = {"x": x, "weight": weight, "bias": bias}
    dtype = validation.common_dtype(inputs)
    validation.check_linear_shapes(x, weight, bias)
    validation.check_out(out, (x.shape[0], weight.shape[1]), dtype)
    validation.check_out_overlap(out, inputs, allow_same_buffer=False)

    x = validation.as_computation_array(x, dtype)
    weight = validation.as_computation_array(weight, dtype)
    with _ieee_arithmetic():
        y = x @ weight
        if bias is not None:
            y = y + validation.as_computation_array(bias, dtype)
    return _store(y, out)


@overload
def linear_backward(
    x: ArrayLike, weight: ArrayLike, dy: ArrayLike, *, need_dx: Literal[True] = ...
) -> tuple[_FloatArray, _FloatArray, _FloatArray]: ...
@overload
def linear_backward(
    x: ArrayLike, weight: ArrayLike, dy: ArrayLike, *, need_dx: Literal[False]
) -> tuple[None, _FloatArray, _FloatArray]: ...
@overload
def linear_backward(
    x: ArrayLike, weight: ArrayLike, dy: ArrayLike, *, need_dx: bool = ...
) -> tuple[_FloatArray | None, _FloatArray, _FloatArray]: ...
def linear_backward(
    x: ArrayLike, weight: ArrayLike, dy: ArrayLike, *, need_dx: bool = True
) -> tuple[_FloatArray | None, _FloatArray, _FloatArray]:
    """Compute the gradients of ``y = x @ weight + bias`` from ``dy = dL/dy``.

    ``dx = dy @ weight.T``, ``dweight = x.T @ dy`` and ``dbias = dy.sum(axis=0)``.
    Each bias entry is added to every row of its output column, so its gradient is
    the sum of that column of dy over the batch.

    Parameters
    ----------
    x : array_like, shape (B, n_features)
        Input of the forward pass.
    weight : array_like, shape (n_features, n_outputs)
        Weight of the forward pass.
    dy : array_like, shape (B, n_outputs)
        Gradient of the loss with respect to the output y.
    need_dx : bool, default True
        If false, dx is not computed and None is returned in its place, as for the
        first layer of a network.

    Returns
    -------
    dx : ndarray of shape (B, n_features), or None if ``need_dx`` is false
    dweight : ndarray, shape (n_features, n_outputs)
    dbias : ndarray, shape (n_outputs,)
        Always returned, because this function takes no bias argument. Zeros when
        B == 0.

    Raises
    ------
    TypeError
        If an input has a complex, object, string, datetime or void dtype,
        or ``need_dx`` is not a bool.
    ValueError
        If x or weight is not 2-D, ``x.shape[1] != weight.shape[0]``, or dy
        does not have shape (B, n_outputs).

    Notes
    -----
    All returned arrays have the common computation dtype of x, weight and dy.

    Examples
    --------
    Each bias entry gets the sum of its column of dy over the batch:

    >>> import numpy as np
    >>> from nnback import reference
    >>> x = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> weight = np.array([[1.0, 0.0, -1.0], [0.5, 1.0, 2.0]])
    >>> dy = np.array([[1.0, 0.0, 2.0], [1.0, 1.0, 0.0]])
    >>> dx, dweight, dbias = reference.linear_backward(x, weight, dy)
    >>> print(dx)
    [[-1.   4.5]
     [ 1.   1.5]]
    >>> print(dweight)
    [[4. 3. 2.]
     [6. 4. 4.]]
    >>> print(dbias)
    [2. 1. 2.]
    """
    x = validation.as_array("x", x)
    weight = validation.as_array("weight", weight)
    dy = validation.as_array("dy", dy)

    dtype = validation.common_dtype({"x": x, "weight": weight, "dy": dy})
    validation.check_linear_shapes(x, weight)
    validation.check_linear_gradient_shape(x, weight, dy)
    validation.check_flag("need_dx", need_dx)

    x = validation.as_computation_array(x, dtype)
    weight = validation.as_computation_array(weight, dtype)
    dy = validation.as_computation_array(dy, dtype)
    with _ieee_arithmetic():
        dx = dy @ weight.T if need_dx else None
        dweight = x.T @ dy
        dbias = dy.sum(axis=0)
    return dx, dweight, dbias


# ---------------------------------------------------------------------------
# Element-wise activations
# ---------------------------------------------------------------------------


def _activation_forward_input(x, out) -> NDArray[Any]:
    """Check x and out, and return x converted to its computation dtype."""
    x = validation.as_array("x", x)

    dtype = validation.computation_dtype("x", x)
    validation.check_out(out, x.shape, dtype)
    validation.check_out_overlap(out, {"x": x}, allow_same_buffer=True)

    return validation.as_computation_array(x, dtype)


def _activation_backward_inputs(y, dy, out) -> tuple[NDArray[Any], NDArray[Any]]:
    """Check y, dy and out, and return y and dy converted to their common dtype."""
    y = validation.as_array("y", y)
    dy = validation.as_array("dy", dy)

    inputs = {"y": y, "dy": dy}
    dtype = validation.common_dtype(inputs)
    validation.require_same_shape("y", y, "dy", dy)
    validation.check_out(out, y.shape, dtype)
    validation.check_out_overlap(out, inputs, allow_same_buffer=True)

    return validation.as_computation_array(y, dtype), validation.as_computation_array(dy, dtype)


def sigmoid_forward(x: ArrayLike, *, out: _FloatArray | None = None) -> _FloatArray:
    """Compute the logistic sigmoid ``y = 1 / (1 + exp(-x))`` element-wise.

    Parameters
    ----------
    x : array_like, any shape
        Input, computed element-wise.
    out : ndarray, optional
        C-contiguous, writable array of x's shape and the result dtype. It may be
        x itself.

    Returns
    -------
    y : ndarray, same shape as x
        Values in [0, 1], with ``sigmoid(-inf) = 0`` and ``sigmoid(+inf) = 1``.
        NaN where x is NaN.

    Raises
    ------
    TypeError
        If x has a complex, object, string, datetime or void dtype, or ``out``
        is not an ndarray.
    ValueError
        If ``out`` has the wrong shape or dtype, is not C-contiguous, is
        read-only, or overlaps x without being x itself.

    Examples
    --------
    >>> import numpy as np
    >>> from nnback import reference
    >>> print(np.round(reference.sigmoid_forward(np.array([-np.inf, -1.0, 0.0, 1.0, np.inf])), 4))
    [0.     0.2689 0.5    0.7311 1.    ]
    """
    x = _activation_forward_input(x, out)

    y = np.empty_like(x)
    # exp is only evaluated at non-positive arguments, so it cannot overflow, and
    # only underflow to 0 is silenced. NaN fails the test x >= 0 and propagates
    # through the second branch.
    non_negative = x >= 0
    with np.errstate(under="ignore"):
        y[non_negative] = 1 / (1 + np.exp(-x[non_negative]))
        e = np.exp(x[~non_negative])
        y[~non_negative] = e / (1 + e)
    return _store(y, out)


def sigmoid_backward(y: ArrayLike, dy: ArrayLike, *, out: _FloatArray | None = None) -> _FloatArray:
    """Compute ``dx = dy * y * (1 - y)`` from the sigmoid output y.

    Parameters
    ----------
    y : array_like
        Output of ``sigmoid_forward``.
    dy : array_like, same shape as y
        Gradient of the loss with respect to y.
    out : ndarray, optional
        C-contiguous, writable array of y's shape and the result dtype. It may be
        y or dy itself.

    Returns
    -------
    dx : ndarray, same shape as y
        NaN wherever y or dy is NaN.

    Raises
    ------
    TypeError
        If y or dy has a complex, object, string, datetime or void dtype, or
        ``out`` is not an ndarray.
    ValueError
        If y and dy differ in shape, or ``out`` has the wrong shape or dtype, is
        not C-contiguous, is read-only, or overlaps y or dy without being one of
        them.

    Examples
    --------
    >>> import numpy as np
    >>> from nnback import reference
    >>> print(reference.sigmoid_backward(np.array([0.5, 0.25]), np.array([1.0, 2.0])))
    [0.25  0.375]
    """
    y, dy = _activation_backward_inputs(y, dy, out)
    with _ieee_arithmetic():
        dx = dy * y * (1 - y)
    return _store(dx, out)


def tanh_forward(x: ArrayLike, *, out: _FloatArray | None = None) -> _FloatArray:
    """Compute ``y = tanh(x) = (exp(x) - exp(-x)) / (exp(x) + exp(-x))`` element-wise.

    Parameters
    ----------
    x : array_like, any shape
        Input, computed element-wise.
    out : ndarray, optional
        C-contiguous, writable array of x's shape and the result dtype. It may be
        x itself.

    Returns
    -------
    y : ndarray, same shape as x
        Values in [-1, 1], with ``tanh(+-inf) = +-1``. NaN where x is NaN.

    Raises
    ------
    TypeError
        If x has a complex, object, string, datetime or void dtype, or ``out``
        is not an ndarray.
    ValueError
        If ``out`` has the wrong shape or dtype, is not C-contiguous, is
        read-only, or overlaps x without being x itself.

    Examples
    --------
    >>> import numpy as np
    >>> from nnback import reference
    >>> print(np.round(reference.tanh_forward(np.array([-np.inf, 0.0, 0.5, np.inf])), 4))
    [-1.      0.      0.4621  1.    ]
    """
    x = _activation_forward_input(x, out)
    return _store(np.tanh(x), out)


def tanh_backward(y: ArrayLike, dy: ArrayLike, *, out: _FloatArray | None = None) -> _FloatArray:
    """Compute ``dx = dy * (1 - y * y)`` from the tanh output y.

    The derivative of tanh is ``1 - tanh(x)**2``.

    Parameters
    ----------
    y : array_like
        Output of ``tanh_forward``.
    dy : array_like, same shape as y
        Gradient of the loss with respect to y.
    out : ndarray, optional
        C-contiguous, writable array of y's shape and the result dtype. It may be
        y or dy itself.

    Returns
    -------
    dx : ndarray, same shape as y
        NaN wherever y or dy is NaN.

    Raises
    ------
    TypeError
        If y or dy has a complex, object, string, datetime or void dtype, or
        ``out`` is not an ndarray.
    ValueError
        If y and dy differ in shape, or ``out`` has the wrong shape or dtype, is
        not C-contiguous, is read-only, or overlaps y or dy without being one of
        them.

    Examples
    --------
    >>> import numpy as np
    >>> from nnback import reference
    >>> print(reference.tanh_backward(np.array([0.0, 0.5, -1.0]), np.array([1.0, 2.0, 3.0])))
    [1.  1.5 0. ]
    """
    y, dy = _activation_backward_inputs(y, dy, out)
    with _ieee_arithmetic():
        dx = dy * (1 - y * y)
    return _store(dx, out)


def relu_forward(x: ArrayLike, *, out: _FloatArray | None = None) -> _FloatArray:
    """Compute the rectifier ``y = max(0, x)`` element-wise.

    Parameters
    ----------
    x : array_like, any shape
        Input, computed element-wise.
    out : ndarray, optional
        C-contiguous, writable array of x's shape and the result dtype. It may be
        x itself.

    Returns
    -------
    y : ndarray, same shape as x
        Equal to x where x > 0 and 0 where x <= 0 (the sign of a zero is not
        specified). NaN where x is NaN.

    Raises
    ------
    TypeError
        If x has a complex, object, string, datetime or void dtype, or ``out``
        is not an ndarray.
    ValueError
        If ``out`` has the wrong shape or dtype, is not C-contiguous, is
        read-only, or overlaps x without being x itself.

    Examples
    --------
    >>> import numpy as np
    >>> from nnback import reference
    >>> print(reference.relu_forward(np.array([-2.0, 0.5, np.nan])))
    [0.  0.5 nan]
    """
    x = _activation_forward_input(x, out)
    # np.maximum propagates NaN, unlike a comparison-based mask.
    return _store(np.maximum(x, 0), out)


def relu_backward(y: ArrayLike, dy: ArrayLike, *, out: _FloatArray | None = None) -> _FloatArray:
    """Compute ``dx = dy * m`` with the mask ``m = 1 if y > 0, 0 if y <= 0, NaN if y is NaN``.

    The derivative at exactly y == 0 is taken to be 0.

    Parameters
    ----------
    y : array_like
        Output of ``relu_forward``.
    dy : array_like, same shape as y
        Gradient of the loss with respect to y.
    out : ndarray, optional
        C-contiguous, writable array of y's shape and the result dtype. It may be
        y or dy itself.

    Returns
    -------
    dx : ndarray, same shape as y
        NaN where y is NaN, where dy is NaN, and where y <= 0 and dy is infinite.

    Raises
    ------
    TypeError
        If y or dy has a complex, object, string, datetime or void dtype, or
        ``out`` is not an ndarray.
    ValueError
        If y and dy differ in shape, or ``out`` has the wrong shape or dtype, is
        not C-contiguous, is read-only, or overlaps y or dy without being one of
        them.

    Examples
    --------
    >>> import numpy as np
    >>> from nnback import reference
    >>> print(reference.relu_backward(np.array([0.0, 0.5, np.nan]), np.array([5.0, 5.0, 5.0])))
    [ 0.  5. nan]
    """
    y, dy = _activation_backward_inputs(y, dy, out)

    # The mask has y's float dtype, so a float32 gradient stays float32.
    mask = np.asarray(y > 0, dtype=y.dtype)
    mask[np.isnan(y)] = np.nan
    with _ieee_arithmetic():
        dx = dy * mask
    return _store(dx, out)


# ---------------------------------------------------------------------------
# Softmax and cross-entropy
# ---------------------------------------------------------------------------


def _logits_input(z, out) -> NDArray[Any]:
    """Check the logits z (B, C) and out, and return z converted to its computation dtype."""
    z = validation.as_array("z", z)

    dtype = validation.computation_dtype("z", z)
    validation.require_ndim("z", z, 2, "(B, C)")
    validation.check_out(out, z.shape, dtype)
    validation.check_out_overlap(out, {"z": z}, allow_same_buffer=True)

    return validation.as_computation_array(z, dtype)


def _shift_and_log_sum_exp(z):
    """Return ``z - max`` per row and ``log(sum(exp(z - max)))`` per row, shape (B, 1).

    The row maximum is subtracted so that exp never overflows. The sum then contains
    exp(0) = 1 and is at least 1, unless the row is empty (C == 0) or the shift
    produced NaN.
    """
    with _ieee_arithmetic():
        # initial=-inf makes the maximum of an empty row -inf instead of an error.
        row_max = z.max(axis=1, keepdims=True, initial=-np.inf)
        shifted = z - row_max
        sum_exp = np.exp(shifted).sum(axis=1, keepdims=True)
        # An empty row has the sum 0 and the log-sum-exp log(0) = -inf.
        with np.errstate(divide="ignore"):
            log_sum_exp = np.log(sum_exp)
    return shifted, log_sum_exp


def softmax(z: ArrayLike, *, out: _FloatArray | None = None) -> _FloatArray:
    """Compute ``p_ij = exp(z_ij) / sum_k exp(z_ik)`` row by row.

    The row maximum is subtracted before exp, which leaves p unchanged.

    Parameters
    ----------
    z : array_like, shape (B, C)
        Logits.
    out : ndarray, shape (B, C), optional
        C-contiguous, writable array of the result dtype. It may be z itself.

    Returns
    -------
    p : ndarray, shape (B, C)
        Each row sums to 1 up to rounding. Rows containing NaN, rows whose maximum
        is +inf and rows of all -inf are NaN.

    Raises
    ------
    TypeError
        If z has a complex, object, string, datetime or void dtype, or ``out``
        is not an ndarray.
    ValueError
        If z is not 2-D, or ``out`` has the wrong shape or dtype, is not
        C-contiguous, is read-only, or overlaps z without being z itself.

    Examples
    --------
    >>> import numpy as np
    >>> from nnback import reference
    >>> print(np.round(reference.softmax(np.array([[1.0, 2.0, 3.0], [0.0, 0.0, np.inf]])), 4))
    [[0.09   0.2447 0.6652]
     [   nan    nan    nan]]
    """
    z = _logits_input(z, out)

    shifted, log_sum_exp = _shift_and_log_sum_exp(z)
    with _ieee_arithmetic():
        # exp(shifted - log_sum_exp) equals exp(z - m) / sum_k exp(z_k - m), and it
        # is exactly exp(log_softmax(z)).
        p = np.exp(shifted - log_sum_exp)
    return _store(p, out)


def log_softmax(z: ArrayLike, *, out: _FloatArray | None = None) -> _FloatArray:
    """Compute ``log p_ij = z_ij - log(sum_k exp(z_ik))`` row by row.

    The result is computed in the log domain, not as ``log(softmax(z))``, so it is
    finite wherever z is finite, even where p underflows to 0.

    Parameters
    ----------
    z : array_like, shape (B, C)
        Logits.
    out : ndarray, shape (B, C), optional
        C-contiguous, writable array of the result dtype. It may be z itself.

    Returns
    -------
    log_p : ndarray, shape (B, C)
        NaN in the same rows as ``softmax``.

    Raises
    ------
    TypeError
        If z has a complex, object, string, datetime or void dtype, or ``out``
        is not an ndarray.
    ValueError
        If z is not 2-D, or ``out`` has the wrong shape or dtype, is not
        C-contiguous, is read-only, or overlaps z without being z itself.

    Examples
    --------
    >>> import numpy as np
    >>> from nnback import reference
    >>> print(reference.log_softmax(np.array([[0.0, -1000.0]])))
    [[    0. -1000.]]
    """
    z = _logits_input(z, out)

    shifted, log_sum_exp = _shift_and_log_sum_exp(z)
    with _ieee_arithmetic():
        log_p = shifted - log_sum_exp
    return _store(log_p, out)


def _checked_loss_inputs(
    z, targets
) -> tuple[NDArray[Any], NDArray[Any] | None, NDArray[Any] | None]:
    """Check z and the targets, and convert them for the loss.

    Returns ``(z, labels, probabilities)``, where exactly one of labels (an intp
    array of shape (B,)) and probabilities (z's shape and dtype) is None. Integer
    targets are class indices, and every label is range-checked before anything
    is converted. Floating-point targets are probabilities with the shape of z.
    """
    z = validation.as_array("z", z)
    targets = validation.as_array("targets", targets)

    if validation.is_class_index_targets(targets):
        dtype = validation.computation_dtype("z", z)
        validation.require_ndim("z", z, 2, "(B, C)")
        validation.check_class_indices(targets, z.shape)
        z = validation.as_computation_array(z, dtype)
        return z, targets.astype(np.intp), None

    dtype = validation.common_dtype({"z": z, "targets": targets})
    validation.require_ndim("z", z, 2, "(B, C)")
    validation.check_probability_shape(targets, z.shape)
    z = validation.as_computation_array(z, dtype)
    return z, None, validation.as_computation_array(targets, dtype)


def _class_index_loss(shifted, log_sum_exp, p, labels):
    """Return the per-row losses and their gradient for class indices (one-hot targets)."""
    rows = np.arange(labels.shape[0])
    # logsumexp(z_i) - z_i[c_i], with the row maximum cancelled from both terms.
    row_losses = log_sum_exp[:, 0] - shifted[rows, labels]
    dz = p.copy()
    dz[rows, labels] -= 1
    return row_losses, dz


def _probability_loss(shifted, log_sum_exp, p, probabilities):
    """Return the per-row losses and their gradient for probability targets."""
    log_p = shifted - log_sum_exp
    # Only entries with t != 0 enter the sum, which implements 0 * log 0 = 0.
    # Multiplying t = 0 by log p = -inf would give NaN.
    loss_terms = np.zeros_like(log_p)
    nonzero = probabilities != 0
    loss_terms[nonzero] = -probabilities[nonzero] * log_p[nonzero]
    row_losses = loss_terms.sum(axis=1)

    # The log-sum-exp of a row is NaN exactly when the row contains NaN or meets
    # inf - inf in its shift. Such a row has a NaN loss even where all of its
    # targets are 0 and the masked sum above skipped every term. An empty row
    # (C == 0) has the log-sum-exp -inf and keeps the loss 0.
    row_losses[np.isnan(log_sum_exp[:, 0])] = np.nan

    dz = p * probabilities.sum(axis=1, keepdims=True) - probabilities
    return row_losses, dz


@overload
def softmax_cross_entropy(
    z: ArrayLike, targets: ArrayLike, *, reduction: Literal["mean", "sum"] = ...
) -> tuple[float, _FloatArray]: ...
@overload
def softmax_cross_entropy(
    z: ArrayLike, targets: ArrayLike, *, reduction: Literal["none"]
) -> tuple[_FloatArray, _FloatArray]: ...
@overload
def softmax_cross_entropy(
    z: ArrayLike, targets: ArrayLike, *, reduction: str = ...
) -> tuple[float | _FloatArray, _FloatArray]: ...
def softmax_cross_entropy(
    z: ArrayLike, targets: ArrayLike, *, reduction: str = "mean"
) -> tuple[Any, _FloatArray]:
    """Compute the softmax cross-entropy loss and its gradient with respect to z.

    With ``log p = log_softmax(z)``, the per-row loss is ``l_i = -sum_j t_ij log p_ij``.
    A class index ``c_i`` is treated as the one-hot row ``t_ij = [j == c_i]``, which
    gives ``l_i = logsumexp(z_i) - z_i[c_i]``. The gradient of ``l_i`` is
    ``p_i * sum_j t_ij - t_i``, which is ``p_i - t_i`` for rows that sum to 1.

    Parameters
    ----------
    z : array_like, shape (B, C)
        Logits.
    targets : array_like, shape (B,) of integers or (B, C) of floats
        Class indices in ``[0, C)`` of any integer dtype, or target probabilities.
        Probability rows need not sum to 1, and an entry of exactly 0 contributes
        no loss even where its logit is -inf.
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides the summed loss and the gradient by B. ``"sum"`` returns
        the summed loss. ``"none"`` returns the per-row losses, and the gradient of
        their sum.

    Returns
    -------
    loss : float or ndarray of shape (B,)
        A Python float for "mean" and "sum" (the float64 sum or mean of the row
        losses, rounded to the computation dtype), and an array of the computation
        dtype for "none". The mean over B == 0 rows is NaN, and the sum is 0.0. A
        row of z that contains NaN has a NaN loss, whatever its targets.
    dz : ndarray, shape (B, C)
        Gradient of the returned loss (for "none", of its sum) with respect to z.
        NaN in the rows of z that contain NaN.

    Raises
    ------
    TypeError
        For bool, complex, object or string targets, for 1-D float targets, and
        for a complex, object or string z.
    ValueError
        For an invalid reduction or shapes that do not match z.
    IndexError
        For the first class index outside ``[0, C)``, before any computation.

    Examples
    --------
    The loss of a class index is ``logsumexp(z_i) - z_i[c_i]``:

    >>> import numpy as np
    >>> from nnback import reference
    >>> z = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    >>> loss, dz = reference.softmax_cross_entropy(z, np.array([0, 2]), reduction="sum")
    >>> round(loss, 4)
    1.3382
    >>> print(np.round(dz, 4))
    [[-0.213   0.1065  0.1065]
     [ 0.3333  0.3333 -0.6667]]

    A target row that sums to 2 doubles the ``p`` term of the gradient:

    >>> _, dz = reference.softmax_cross_entropy(z[1:], np.array([[1.0, 1.0, 0.0]]))
    >>> print(np.round(dz, 4))
    [[-0.3333 -0.3333  0.6667]]
    >>> reference.softmax_cross_entropy(z, np.array([0, 3]))
    Traceback (most recent call last):
        ...
    IndexError: targets[1] = 3 is not a valid class index for z of shape (2, 3): expected 0 <= label < 3
    """
    validation.check_reduction(reduction)
    z, labels, probabilities = _checked_loss_inputs(z, targets)
    n_rows = z.shape[0]

    shifted, log_sum_exp = _shift_and_log_sum_exp(z)
    with _ieee_arithmetic():
        p = np.exp(shifted - log_sum_exp)
        if labels is not None:
            row_losses, dz = _class_index_loss(shifted, log_sum_exp, p, labels)
        else:
            row_losses, dz = _probability_loss(shifted, log_sum_exp, p, probabilities)

    if reduction == "none":
        return row_losses, dz

    # The row losses are summed in float64, and the reduced loss is rounded to the
    # computation dtype, so a float32 mean stays finite when only the sum overflows.
    with _ieee_arithmetic():
        loss_sum = row_losses.sum(dtype=np.float64)
        if reduction == "sum":
            return float(z.dtype.type(loss_sum)), dz

        # reduction == "mean"
        if n_rows == 0:
            return float("nan"), dz
        return float(z.dtype.type(loss_sum / n_rows)), dz / n_rows
