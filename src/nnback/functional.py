r"""Forward and backward passes of the layers and the loss, on compiled kernels.

Every function checks and converts its arguments, allocates its outputs, and
hands the work to a compiled kernel that runs without the GIL. The same
functions, with the same signatures, checks and numerics, are written in pure
NumPy in ``nnback.reference``, which the tests use as the oracle.

Shapes
------
Arrays are row-major with the batch first: ``B`` rows, ``n_features`` inputs and
``n_outputs`` outputs per row, and ``C`` classes for the loss.

* ``x``: (B, n_features), ``weight``: (n_features, n_outputs), ``bias``: (n_outputs,)
* ``y`` and ``dy`` of a linear layer: (B, n_outputs)
* activations work element-wise on arrays of any shape
* logits ``z``: (B, C), and ``targets``: class indices of shape (B,) or
  probabilities of shape (B, C)

Formulas
--------
``dy`` is the gradient of a scalar loss L with respect to an output, and each
backward function returns the gradient with respect to the inputs::

    linear:   y = x @ weight + bias
              dx = dy @ weight.T, dweight = x.T @ dy, dbias = dy.sum(axis=0)
    sigmoid:  y = 1 / (1 + exp(-x))            dx = dy * y * (1 - y)
    tanh:     y = tanh(x)                      dx = dy * (1 - y * y)
    ReLU:     y = max(0, x)                    dx = dy * (y > 0)
    softmax:  p_ij = exp(z_ij - m_i) / sum_k exp(z_ik - m_i),  m_i = max_j z_ij
    log-softmax:    log p_ij = (z_ij - m_i) - log(sum_k exp(z_ik - m_i))
    cross-entropy:  l_i = -sum_j t_ij log p_ij,   dl_i/dz_ij = p_ij * sum_k t_ik - t_ij

Each bias entry is added to every row, so ``dbias`` has one entry per output,
summed over the batch. A class index ``c_i`` is the one-hot target row, so
``l_i = logsumexp(z_i) - z_i[c_i]`` and ``dl_i/dz_i = p_i - onehot(c_i)``.

Numerics
--------
* Sigmoid evaluates ``1 / (1 + exp(-x))`` for x >= 0 and ``e / (1 + e)`` with
  ``e = exp(x)`` for x < 0, so it never overflows: ``sigmoid(+inf) = 1`` and
  ``sigmoid(-inf) = 0``. ``tanh(+-inf) = +-1``.
* ReLU's derivative at exactly y = 0 is 0.
* Backward passes are plain products, so NaN in y or dy gives NaN in dx:
  ``sigmoid_backward`` and ``tanh_backward`` return NaN wherever y or dy is NaN.
  ``relu_backward`` multiplies dy by ``m = 1 if y > 0, 0 if y <= 0, NaN if y is
  NaN``, so it returns NaN where y is NaN, and where y <= 0 and dy is NaN or
  infinite (``0 * inf`` is NaN). ``linear_backward`` carries NaN in x, weight or
  dy through its sums of products and its column sums.
* Softmax, log-softmax and the loss subtract the row maximum before exp, compute
  the loss as log-sum-exp minus the target logit (never ``log(softmax)``), and
  never clip. NaN anywhere in a row of z makes that row's p, log p, loss and
  gradient NaN. A row whose maximum is +inf, or whose entries are all -inf, is NaN
  because ``inf - inf`` is NaN.
* Probability targets use ``0 * log 0 = 0``: a target of exactly 0 adds no loss,
  even where its logit is -inf.
* Reduction "mean" divides by B, for probability targets too. The mean over an
  empty batch (B == 0) is NaN, as 0/0 is, without a warning. The sum over an empty
  batch is 0.0.
* Zero-size dimensions give the exact result of empty sums: with n_features == 0
  every row of y is the bias, and with B == 0 dweight and dbias are zeros.

Inputs and outputs
------------------
float32 and float64 are computed natively. Other inputs are converted once:
float16 to float32, integer and bool to float64, longdouble to float64. Several
floating-point inputs of one call are promoted to their common dtype. Inputs that
are not C-contiguous, read-only or byte-swapped are accepted, and no input is
ever modified. Outputs are new C-contiguous arrays, unless ``out=`` is given: it
must be a writable C-contiguous array of the result's shape and dtype, and it is
filled and returned. An element-wise function or softmax may write into the
buffer of its own input (``out=x``), but any other overlap of ``out`` with an
input raises ValueError. The sizes of a linear layer must fit BLAS's 32-bit
integers (at most 2**31 - 1).
"""

from collections.abc import Callable
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from nnback import _activations, _linear, _softmax
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
        Weight matrix, the transpose of PyTorch's layout.
    bias : array_like, shape (n_outputs,), optional
        Added to every row of ``x @ weight``. None means no bias.
    out : ndarray, shape (B, n_outputs), optional
        Writable C-contiguous array of the result dtype that receives y. It must
        not overlap x, weight or bias.

    Returns
    -------
    y : ndarray, shape (B, n_outputs)
        Of the common computation dtype of the inputs. ``out`` if it was given.
        With n_features == 0 every row of y is the bias (or 0).

    Raises
    ------
    TypeError
        If an input has a complex, object, string, datetime or void dtype, or
        ``out`` is not an ndarray.
    ValueError
        If x or weight is not 2-D, ``x.shape[1] != weight.shape[0]``, bias does
        not have shape (n_outputs,), a dimension exceeds 2**31 - 1, or ``out``
        has the wrong shape or dtype, is not C-contiguous, is read-only or
        overlaps an input.

    Notes
    -----
    B, n_features and n_outputs may each be 0, and may be at most 2**31 - 1.

    Examples
    --------
    >>> import numpy as np
    >>> from nnback.functional import linear_forward
    >>> x = np.array([[1.0, 2.0], [3.0, 4.0]])                # (B, n_features)
    >>> weight = np.array([[1.0, 0.0, -1.0], [0.5, 1.0, 2.0]])  # (n_features, n_outputs)
    >>> bias = np.array([0.0, 1.0, 0.5])
    >>> y = linear_forward(x, weight, bias)
    >>> print(y)
    [[2.  3.  3.5]
     [5.  5.  5.5]]
    >>> y.shape, y.dtype
    ((2, 3), dtype('float64'))
    """
    x = validation.as_array("x", x)
    weight = validation.as_array("weight", weight)
    if bias is not None:
        bias = validation.as_array("bias", bias)

    inputs = {"x": x, "weight": weight, "bias": bias}
    dtype = validation.common_dtype(inputs)
    validation.check_linear_shapes(x, weight, bias)
    validation.require_blas_dimensions("x", x)
    validation.require_blas_dimensions("weight", weight)
    result_shape = (x.shape[0], weight.shape[1])
    validation.check_out(out, result_shape, dtype)
    validation.check_out_overlap(out, inputs, allow_same_buffer=False)

    x = validation.as_computation_array(x, dtype)
    weight = validation.as_computation_array(weight, dtype)
    if bias is not None:
        bias = validation.as_computation_array(bias, dtype)
    y = _kernel_output(out, result_shape, dtype)

    _linear.forward(x, weight, bias, y)
    return _deliver(y, out)


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
    """Compute ``dx = dy @ weight.T``, ``dweight = x.T @ dy`` and ``dbias = dy.sum(axis=0)``.

    These are the gradients of ``y = x @ weight + bias`` given ``dy = dL/dy``. Each
    bias entry is added to every row of its output column, so its gradient is that
    column of dy summed over the batch.

    Parameters
    ----------
    x : array_like, shape (B, n_features)
        Input of the forward pass.
    weight : array_like, shape (n_features, n_outputs)
        Weight of the forward pass.
    dy : array_like, shape (B, n_outputs)
        Gradient of the loss with respect to y.
    need_dx : bool, default True
        If false, dx is not computed and None is returned in its place, as for
        the first layer of a network.

    Returns
    -------
    dx : ndarray of shape (B, n_features), or None if ``need_dx`` is false
    dweight : ndarray, shape (n_features, n_outputs)
        Zeros when B == 0.
    dbias : ndarray, shape (n_outputs,)
        Always returned, because this function does not know whether the layer
        has a bias. Zeros when B == 0.

    Raises
    ------
    TypeError
        If an input has a complex, object, string, datetime or void dtype,
        or ``need_dx`` is not a bool.
    ValueError
        If x or weight is not 2-D, ``x.shape[1] != weight.shape[0]``, dy does
        not have shape (B, n_outputs), or a dimension exceeds 2**31 - 1.

    Notes
    -----
    All returned arrays have the common computation dtype of x, weight and dy.
    NaN in x, weight or dy propagates into every sum of products that reads it.

    Examples
    --------
    >>> import numpy as np
    >>> from nnback.functional import linear_backward
    >>> x = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> weight = np.array([[1.0, 0.0, -1.0], [0.5, 1.0, 2.0]])
    >>> dy = np.ones((2, 3))
    >>> dx, dweight, dbias = linear_backward(x, weight, dy)
    >>> print(dx)
    [[0.  3.5]
     [0.  3.5]]
    >>> print(dweight)
    [[4. 4. 4.]
     [6. 6. 6.]]
    >>> print(dbias)
    [2. 2. 2.]
    >>> linear_backward(x, weight, dy, need_dx=False)[0] is None
    True
    """
    x = validation.as_array("x", x)
    weight = validation.as_array("weight", weight)
    dy = validation.as_array("dy", dy)

    dtype = validation.common_dtype({"x": x, "weight": weight, "dy": dy})
    validation.check_linear_shapes(x, weight)
    validation.check_linear_gradient_shape(x, weight, dy)
    validation.check_flag("need_dx", need_dx)
    validation.require_blas_dimensions("x", x)
    validation.require_blas_dimensions("weight", weight)

    x = validation.as_computation_array(x, dtype)
    weight = validation.as_computation_array(weight, dtype)
    dy = validation.as_computation_array(dy, dtype)
    dx = np.empty(x.shape, dtype=dtype) if need_dx else None
    dweight = np.empty(weight.shape, dtype=dtype)
    dbias = np.empty(weight.shape[1], dtype=dtype)

    _linear.backward(x, weight, dy, dx, dweight, dbias)
    return dx, dweight, dbias


# ---------------------------------------------------------------------------
# Element-wise activations
# ---------------------------------------------------------------------------


def _kernel_output(out, shape, dtype):
    """Return the array that a kernel writes: ``out``, or a new array.

    A new array is returned when ``out`` is None or when its data is not aligned
    to the item size (a view at an odd byte offset), because the kernels write
    through typed C pointers. :func:`_deliver` then copies the result into out.
    """
    if out is None or not out.flags.aligned:
        return np.empty(shape, dtype=dtype)
    return out


def _deliver(result, out):
    """Return ``result``, after copying it into ``out`` if the kernel wrote elsewhere."""
    if out is None or result is out:
        return result
    np.copyto(out, result)
    return out


def _flat_view(array):
    """Return a 1-D view of the C-contiguous ``array`` for the element-wise kernels.

    An ndarray subclass is viewed as a plain ndarray first, because
    ``np.matrix.reshape(-1)`` returns a 2-D matrix.
    """
    if type(array) is not np.ndarray:
        array = array.view(np.ndarray)
    return array.reshape(-1)


def _apply_forward(kernel, x, out):
    """Validate x and out, run ``kernel(x_flat, y_flat)`` and return y."""
    x = validation.as_array("x", x)

    dtype = validation.computation_dtype("x", x)
    validation.check_out(out, x.shape, dtype)
    validation.check_out_overlap(out, {"x": x}, allow_same_buffer=True)

    x = validation.as_computation_array(x, dtype)
    y = _kernel_output(out, x.shape, dtype)

    # Both arrays are C-contiguous, so reshape(-1) returns views.
    kernel(x.reshape(-1), _flat_view(y))
    return _deliver(y, out)


def _apply_backward(kernel, y, dy, out):
    """Validate y, dy and out, run ``kernel(y_flat, dy_flat, dx_flat)`` and return dx."""
    y = validation.as_array("y", y)
    dy = validation.as_array("dy", dy)

    inputs = {"y": y, "dy": dy}
    dtype = validation.common_dtype(inputs)
    validation.require_same_shape("y", y, "dy", dy)
    validation.check_out(out, y.shape, dtype)
    validation.check_out_overlap(out, inputs, allow_same_buffer=True)

    y = validation.as_computation_array(y, dtype)
    dy = validation.as_computation_array(dy, dtype)
    dx = _kernel_output(out, y.shape, dtype)

    kernel(y.reshape(-1), dy.reshape(-1), _flat_view(dx))
    return _deliver(dx, out)


def sigmoid_forward(x: ArrayLike, *, out: _FloatArray | None = None) -> _FloatArray:
    """Compute the logistic sigmoid ``y = 1 / (1 + exp(-x))`` element-wise.

    Parameters
    ----------
    x : array_like, any shape
        Input, computed element-wise.
    out : ndarray, optional
        Writable C-contiguous array of x's shape and the result dtype. It may be
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
    >>> from nnback.functional import sigmoid_forward
    >>> print(np.round(sigmoid_forward(np.array([-np.inf, -1.0, 0.0, 1.0, np.inf])), 4))
    [0.     0.2689 0.5    0.7311 1.    ]

    With ``out=x`` the result overwrites the input:

    >>> x = np.array([[0.0, 1.0, 2.0]], dtype=np.float32)
    >>> y = sigmoid_forward(x, out=x)
    >>> y is x, x.dtype
    (True, dtype('float32'))
    >>> print(np.round(x, 3))
    [[0.5   0.731 0.881]]
    """
    return _apply_forward(_activations.sigmoid_forward, x, out)


def sigmoid_backward(y: ArrayLike, dy: ArrayLike, *, out: _FloatArray | None = None) -> _FloatArray:
    """Compute ``dx = dy * y * (1 - y)`` from the sigmoid output y.

    Parameters
    ----------
    y : array_like
        Output of ``sigmoid_forward``.
    dy : array_like, same shape as y
        Gradient of the loss with respect to y.
    out : ndarray, optional
        Writable C-contiguous array of y's shape and the result dtype. It may be
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
    >>> from nnback.functional import sigmoid_backward, sigmoid_forward
    >>> y = sigmoid_forward(np.array([-1.0, 0.0, 1.0]))
    >>> print(np.round(sigmoid_backward(y, np.ones(3)), 4))
    [0.1966 0.25   0.1966]
    """
    return _apply_backward(_activations.sigmoid_backward, y, dy, out)


def tanh_forward(x: ArrayLike, *, out: _FloatArray | None = None) -> _FloatArray:
    """Compute ``y = tanh(x) = (exp(x) - exp(-x)) / (exp(x) + exp(-x))`` element-wise.

    Parameters
    ----------
    x : array_like, any shape
        Input, computed element-wise.
    out : ndarray, optional
        Writable C-contiguous array of x's shape and the result dtype. It may be
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
    >>> from nnback.functional import tanh_forward
    >>> print(np.round(tanh_forward(np.array([-np.inf, 0.0, 0.5, np.inf])), 4))
    [-1.      0.      0.4621  1.    ]
    """
    return _apply_forward(_activations.tanh_forward, x, out)


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
        Writable C-contiguous array of y's shape and the result dtype. It may be
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
    >>> from nnback.functional import tanh_backward, tanh_forward
    >>> y = tanh_forward(np.array([0.0, 0.5, np.inf]))
    >>> print(np.round(tanh_backward(y, np.ones(3)), 4))
    [1.     0.7864 0.    ]
    """
    return _apply_backward(_activations.tanh_backward, y, dy, out)


def relu_forward(x: ArrayLike, *, out: _FloatArray | None = None) -> _FloatArray:
    """Compute the rectifier ``y = max(0, x)`` element-wise.

    Parameters
    ----------
    x : array_like, any shape
        Input, computed element-wise.
    out : ndarray, optional
        Writable C-contiguous array of x's shape and the result dtype. It may be
        x itself.

    Returns
    -------
    y : ndarray, same shape as x
        Equal to x where x > 0 and 0 where x <= 0 (the sign of a zero result is
        not specified). NaN where x is NaN.

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
    >>> from nnback.functional import relu_forward
    >>> print(relu_forward(np.array([[-2.0, 0.5], [3.0, -0.5]])))
    [[0.  0.5]
     [3.  0. ]]
    """
    return _apply_forward(_activations.relu_forward, x, out)


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
        Writable C-contiguous array of y's shape and the result dtype. It may be
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
    The gradient passes where the output is positive and stops where it is 0:

    >>> import numpy as np
    >>> from nnback.functional import relu_backward
    >>> y = np.array([0.0, 0.5, 3.0])
    >>> print(relu_backward(y, np.array([5.0, 5.0, 5.0])))
    [0. 5. 5.]
    """
    return _apply_backward(_activations.relu_backward, y, dy, out)


# ---------------------------------------------------------------------------
# Softmax and cross-entropy
# ---------------------------------------------------------------------------


def _apply_row_kernel(kernel, z, out):
    """Validate z (B, C) and out, run ``kernel(z, out)`` row by row and return out."""
    z = validation.as_array("z", z)

    dtype = validation.computation_dtype("z", z)
    validation.require_ndim("z", z, 2, "(B, C)")
    validation.check_out(out, z.shape, dtype)
    validation.check_out_overlap(out, {"z": z}, allow_same_buffer=True)

    z = validation.as_computation_array(z, dtype)
    result = _kernel_output(out, z.shape, dtype)

    kernel(z, result)
    return _deliver(result, out)


def softmax(z: ArrayLike, *, out: _FloatArray | None = None) -> _FloatArray:
    """Compute ``p_ij = exp(z_ij) / sum_k exp(z_ik)`` row by row.

    The row maximum is subtracted before exp, which leaves p unchanged and keeps
    exp from overflowing.

    Parameters
    ----------
    z : array_like, shape (B, C)
        Logits.
    out : ndarray, shape (B, C), optional
        Writable C-contiguous array of the result dtype. It may be z itself.

    Returns
    -------
    p : ndarray, shape (B, C)
        Each row sums to 1. Rows containing NaN, rows whose maximum is +inf and
        rows of all -inf are NaN.

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
    >>> from nnback.functional import softmax
    >>> z = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, 1000.0]])
    >>> print(np.round(softmax(z), 4))
    [[0.09   0.2447 0.6652]
     [0.3333 0.3333 0.3333]]
    """
    return _apply_row_kernel(_softmax.softmax, z, out)


def log_softmax(z: ArrayLike, *, out: _FloatArray | None = None) -> _FloatArray:
    """Compute ``log p_ij = z_ij - log(sum_k exp(z_ik))`` row by row.

    The result is computed in the log domain, not as ``log(softmax(z))``, so it is
    finite wherever z is finite, even where p underflows to 0.

    Parameters
    ----------
    z : array_like, shape (B, C)
        Logits.
    out : ndarray, shape (B, C), optional
        Writable C-contiguous array of the result dtype. It may be z itself.

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
    The probability ``exp(-1000)`` underflows to 0, but its logarithm stays
    finite:

    >>> import numpy as np
    >>> from nnback.functional import log_softmax, softmax
    >>> z = np.array([[0.0, -1000.0]])
    >>> print(softmax(z))
    [[1. 0.]]
    >>> print(log_softmax(z))
    [[    0. -1000.]]
    """
    return _apply_row_kernel(_softmax.log_softmax, z, out)


def _checked_class_indices(targets, z_shape):
    """Range-check integer class indices and return them as a C-contiguous intp array.

    The check runs on the labels' own dtype, before the cast to intp, so that no
    value can wrap around into the valid range.
    """
    validation.check_class_index_shape(targets, z_shape)

    labels = validation.as_native_labels(targets)
    position = _softmax.first_invalid_label(labels, z_shape[1])
    if position >= 0:
        raise validation.invalid_label_error(labels, position, z_shape)

    return labels.astype(np.intp, copy=False)


def _loss_as_float(value, dtype):
    """Return ``value`` rounded to ``dtype`` as a Python float.

    A float32 sum beyond the float32 range rounds to +-inf, without a warning.
    """
    with np.errstate(over="ignore"):
        return float(dtype.type(value))


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

    With ``log p = log_softmax(z)``, the unreduced loss of row i is
    ``l_i = -sum_j t_ij log p_ij``, computed as ``sum_j t_ij (logsumexp(z_i) - z_ij)``.
    A class index ``c_i`` is the one-hot row ``t_ij = [j == c_i]``, which gives
    ``l_i = logsumexp(z_i) - z_i[c_i]``. The gradient of ``l_i`` is
    ``p_i * sum_j t_ij - t_i``, which is ``p_i - t_i`` for target rows that sum
    to 1. The reductions are::

        "none":  loss = (l_1, ..., l_B),  dz = d(sum_i l_i)/dz
        "sum":   loss = sum_i l_i,        dz = d(sum_i l_i)/dz
        "mean":  loss = sum_i l_i / B,    dz = d(sum_i l_i)/dz / B

    Parameters
    ----------
    z : array_like, shape (B, C)
        Logits.
    targets : array_like, shape (B,) of integers or (B, C) of floats
        Class indices in ``[0, C)`` of any integer dtype, or target probabilities.
        Probability rows need not sum to 1, and a target of exactly 0 adds no loss,
        even where its logit is -inf.
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    loss : float or ndarray of shape (B,)
        A Python float for "mean" and "sum" (the value rounded to the
        computation dtype), and an array of the computation dtype for "none".
        The mean over B == 0 rows is NaN, and the sum is 0.0. A row of z that
        contains NaN has a NaN loss.
    dz : ndarray, shape (B, C)
        Gradient of the returned loss (for "none", of its sum) with respect to z.
        NaN in the rows of z that contain NaN.

    Raises
    ------
    TypeError
        For bool, complex, object or string targets, for 1-D float targets, and
        for a complex, object or string z.
    ValueError
        For an invalid reduction or shapes that do not fit z.
    IndexError
        For the first class index outside ``[0, C)``, before any computation.

    Notes
    -----
    With probability targets of shape (B, 0) every row loss is 0. With class
    indices and C == 0 every label is out of range.

    Examples
    --------
    Class indices with the mean over B = 2 rows, so ``dz = (p - onehot(t)) / 2``:

    >>> import numpy as np
    >>> from nnback.functional import softmax_cross_entropy
    >>> z = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    >>> loss, dz = softmax_cross_entropy(z, np.array([0, 2]))
    >>> round(loss, 4)
    0.6691
    >>> print(np.round(dz, 4))
    [[-0.1065  0.0533  0.0533]
     [ 0.1667  0.1667 -0.3333]]

    Probability targets with one loss per row:

    >>> t = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    >>> row_losses, dz = softmax_cross_entropy(z, t, reduction="none")
    >>> print(np.round(row_losses, 4))
    [1.2395 1.0986]
    """
    validation.check_reduction(reduction)
    z = validation.as_array("z", z)
    targets = validation.as_array("targets", targets)

    if validation.is_class_index_targets(targets):
        dtype = validation.computation_dtype("z", z)
        validation.require_ndim("z", z, 2, "(B, C)")
        kernel_targets = _checked_class_indices(targets, z.shape)
        z = validation.as_computation_array(z, dtype)
        kernel: Callable[..., float] = _softmax.cross_entropy_labels
    else:
        dtype = validation.common_dtype({"z": z, "targets": targets})
        validation.require_ndim("z", z, 2, "(B, C)")
        validation.check_probability_shape(targets, z.shape)
        z = validation.as_computation_array(z, dtype)
        kernel_targets = validation.as_computation_array(targets, dtype)
        kernel = _softmax.cross_entropy_probabilities

    n_rows = z.shape[0]
    gradient_scale = 1.0 / n_rows if reduction == "mean" and n_rows > 0 else 1.0
    dz = np.empty(z.shape, dtype=dtype)
    row_losses = np.empty(n_rows, dtype=dtype) if reduction == "none" else None

    loss_sum = kernel(z, kernel_targets, gradient_scale, dz, row_losses)

    if reduction == "none":
        return row_losses, dz
    if reduction == "sum":
        return _loss_as_float(loss_sum, dtype), dz
    if n_rows == 0:
        return float("nan"), dz
    return _loss_as_float(loss_sum / n_rows, dtype), dz
