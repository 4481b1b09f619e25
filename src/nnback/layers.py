r"""Layers, the softmax cross-entropy loss and the Sequential container.

Shapes are row-major with the batch first: ``x`` (B, in_features) goes into a
:class:`Linear` layer and ``y`` (B, out_features) comes out. Activations work
element-wise on arrays of any shape, and the loss takes logits ``z`` (B, C).

Each layer has ``forward(x)``, which stores what its backward pass needs, and
``backward(dy)``, which takes ``dy = dL/dy`` of the last forward call and
returns ``dx = dL/dx``::

    Linear   y = x @ W + b         dx = dy @ W.T,  dW = x.T @ dy,  db = dy.sum(axis=0)
    ReLU     y = max(0, x)         dx = dy * (y > 0)
    Sigmoid  y = 1 / (1 + e^-x)    dx = dy * y * (1 - y)
    Tanh     y = tanh(x)           dx = dy * (1 - y * y)

Gradients and buffers
---------------------
``backward`` OVERWRITES the ``.grad`` of each :class:`Parameter` with the
gradient of the last forward batch. Gradients are never accumulated, so no
``zero_grad()`` is needed between steps.

The arrays returned by ``forward`` and ``backward`` are work buffers owned by
the layer. A layer keeps one set of buffers per batch shape, for the
``MAX_CACHED_SHAPES`` most recently used shapes, and overwrites them on the next
call with the same shape. So a training step allocates no arrays after its first
call, provided that its inputs already have the model's dtype and a C-contiguous
layout. Copy a result (``y.copy()``) to keep it across calls. :meth:`Sequential.predict`
returns fresh arrays and stores nothing.

Forward keeps a reference to its input for the backward pass (``Linear`` needs
``x`` for ``dW``), so the input must not be modified between ``forward`` and
``backward``.

Dtypes
------
A layer with parameters has the dtype of its parameters, float32 (default) or
float64. Its inputs (``x`` and ``dy``) of another real dtype are converted once
per call to the layer's dtype, including float64 data going into a float32
layer, which is rounded. This conversion allocates a new array. Complex,
object and string inputs raise TypeError. Activations have no dtype of their
own: they compute float32 and float64 natively and convert other inputs as
``nnback.functional`` does (float16 to float32, integer and bool to float64).

Threads
-------
Because of these buffers, ``forward`` and ``backward`` of one layer, loss or
Sequential must not run in two threads at once. Each of them raises
RuntimeError ("<Class> is already in use by another thread") when it is
entered while another thread is inside ``forward`` or ``backward`` of the same
object. Calls that do not overlap in time are not detected: one thread's
``forward`` between another thread's ``forward`` and ``backward`` still gives
that thread wrong gradients. Give each thread its own layers, model and loss.
``predict`` stores nothing, so any number of threads may call it on one model.
"""

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from nnback import _activations, _linear, _softmax, _validation
from nnback._concurrency import UseGuard, exclusive, forked_in_use_error

__all__ = [
    "Parameter",
    "Linear",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "SoftmaxCrossEntropy",
    "Sequential",
    "mlp",
]

# Number of batch shapes for which a layer keeps work buffers. A training loop
# needs two (the batch size and the smaller last batch of an epoch).
MAX_CACHED_SHAPES = 4

ACTIVATIONS = ("relu", "tanh", "sigmoid")
INITIALIZATIONS = ("he", "glorot")
SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------------------
# Argument helpers
# ---------------------------------------------------------------------------


def _parameter_dtype(dtype):
    """Return ``dtype`` as float32 or float64.

    Raises TypeError for None and ValueError for any other dtype.
    """
    if dtype is None:
        # np.dtype(None) is float64, which would hide a missing argument.
        raise TypeError("dtype must be float32 or float64, got None")
    try:
        resolved = np.dtype(dtype)
    except TypeError as error:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}") from error
    if resolved not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {resolved}")
    return resolved


def _make_rng(rng):
    """Return a ``np.random.Generator`` for None (fresh entropy), an int seed or a Generator."""
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_)):
        if rng < 0:
            raise ValueError(f"rng must be a non-negative int seed, got {rng}")
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"rng must be None, an int seed or a numpy.random.Generator, got {type(rng).__name__}"
    )


def _check_blas_sizes(in_features, out_features):
    """Raise ValueError if a feature size exceeds the 32-bit limit of BLAS."""
    for name, size in (("in_features", in_features), ("out_features", out_features)):
        if size > _validation.MAX_BLAS_DIMENSION:
            raise ValueError(
                f"{name} = {size} exceeds the BLAS limit of {_validation.MAX_BLAS_DIMENSION}"
            )


def _check_size(name, value):
    """Raise unless ``value`` is a non-negative int, and return it as an int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def _as_real_array(name, value):
    """Return ``value`` as an ndarray, raising TypeError for a non-real dtype."""
    if isinstance(value, np.ndarray):
        # A subclass is viewed as a plain ndarray: np.matrix.reshape(-1) stays
        # 2-D, but the element-wise kernels take 1-D views.
        array = _plain_array(value)
    else:
        array = _validation.as_array(name, value)
    if array.dtype.kind not in "fiub":
        raise TypeError(
            f"{name} has unsupported dtype {array.dtype}: expected a real floating-point, "
            f"integer or bool array"
        )
    return array


def _plain_array(array):
    """Return ``array`` as a base-class ndarray, a view of the same memory for a subclass."""
    return array if type(array) is np.ndarray else array.view(np.ndarray)


def _as_dtype(array, dtype):
    """Return ``array`` itself when it is aligned and C-contiguous of ``dtype``, else a converted copy."""
    if array.dtype == dtype and array.flags.c_contiguous and array.flags.aligned:
        return array
    # np.array copies, and so also aligns a view at an odd byte offset, which
    # the kernels must not read through typed C pointers.
    return np.array(array, dtype=dtype, order="C")


def _separate_from(array, buffer):
    """Return ``array``, or a copy of it if it overlaps ``buffer``, which is about to be written."""
    if np.may_share_memory(array, buffer):
        return array.copy()
    return array


class _BufferCache:
    """Work buffers keyed by batch shape, dropping the least recently used key when full."""

    def __init__(self, create):
        self._create = create
        self._entries = OrderedDict()

    def get(self, key):
        entry = self._entries.get(key)
        if entry is None:
            entry = self._create(key)
            self._entries[key] = entry
            if len(self._entries) > MAX_CACHED_SHAPES:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return entry

    def clear(self):
        self._entries.clear()


class _FlatBuffer:
    """A C-contiguous work array and its 1-D view, which the element-wise kernels take."""

    __slots__ = ("array", "flat")

    def __init__(self, shape, dtype):
        self.array = np.empty(shape, dtype=dtype)
        self.flat = self.array.reshape(-1)


# ---------------------------------------------------------------------------
# Parameter
# ---------------------------------------------------------------------------


class Parameter:
    """A trainable array and its gradient.

    Parameters
    ----------
    data : array_like
        The values. A writable C-contiguous float32 or float64 ndarray is used
        as it is, without a copy. Any other input is copied to a new C-contiguous
        array: float16 becomes float32, and integer, bool and longdouble become
        float64. An ndarray subclass (``np.matrix``, a masked array, ``np.memmap``)
        is stored as a plain ndarray view of its memory, so a mask is ignored.

    Attributes
    ----------
    data : ndarray
        The values, updated in place by the optimizers. Assigning a new array
        requires the same shape and dtype, because layers and optimizers keep
        buffers that match them. Write ``p.data[...] = values`` to copy values in.
        An assigned ndarray subclass is stored as a plain ndarray view.
    grad : ndarray
        Gradient of the loss with respect to ``data``, of the same shape and
        dtype, zeros at creation. Layers overwrite it in ``backward``.

    Raises
    ------
    TypeError
        If ``data`` has a complex, object, string, datetime or void dtype. Also
        raised on assignment of a non-ndarray to ``data`` or ``grad``.
    ValueError
        On assignment of an array with another shape or dtype, or one that is
        not writable and C-contiguous, to ``data`` or ``grad``.

    Examples
    --------
    >>> import numpy as np
    >>> from nnback import Parameter
    >>> p = Parameter(np.zeros((2, 3)))
    >>> p
    Parameter(shape=(2, 3), dtype=float64)
    >>> print(p.grad)
    [[0. 0. 0.]
     [0. 0. 0.]]
    >>> p.data[...] = 1.0   # copy values in, keeping the array
    >>> Parameter(np.arange(3)).dtype   # integers are copied to float64
    dtype('float64')
    """

    __slots__ = ("_data", "_grad", "_flat_data", "_flat_grad")

    def __init__(self, data):
        array = _as_real_array("data", data)
        dtype = _validation.computation_dtype("data", array)
        layout_ok = array.flags.c_contiguous and array.flags.writeable and array.flags.aligned
        if not (array.dtype == dtype and layout_ok):
            array = np.array(array, dtype=dtype, order="C")
        self._data = array
        self._flat_data = array.reshape(-1)
        self._set_grad(np.zeros_like(array))

    @property
    def data(self):
        """The parameter values."""
        return self._data

    @data.setter
    def data(self, value):
        self._data = self._checked_array("data", value)
        self._flat_data = self._data.reshape(-1)

    @property
    def grad(self):
        """The gradient of the loss with respect to ``data``."""
        return self._grad

    @grad.setter
    def grad(self, value):
        self._set_grad(self._checked_array("grad", value))

    @property
    def shape(self):
        """Shape of ``data``."""
        return self._data.shape

    @property
    def dtype(self):
        """Dtype of ``data``."""
        return self._data.dtype

    def _set_grad(self, array):
        self._grad = array
        self._flat_grad = array.reshape(-1)

    def __getstate__(self):
        # The flat views are rebuilt on loading: pickled separately, they would
        # become copies that the optimizers update instead of data and grad.
        return self._data, self._grad

    def __setstate__(self, state):
        self._data, grad = state
        self._flat_data = self._data.reshape(-1)
        self._set_grad(grad)

    def _checked_array(self, name, value):
        """Return ``value`` if it can replace ``data`` or ``grad``, else raise."""
        if not isinstance(value, np.ndarray):
            raise TypeError(f"Parameter.{name} must be a numpy.ndarray, got {type(value).__name__}")
        shape, dtype = self._data.shape, self._data.dtype
        if value.shape != shape or value.dtype != dtype:
            raise ValueError(
                f"Parameter.{name} must keep shape {shape} and dtype {dtype}, got shape "
                f"{value.shape} and dtype {value.dtype}; to copy values in, write "
                f"p.{name}[...] = values"
            )
        if not value.flags.c_contiguous or not value.flags.writeable:
            raise ValueError(f"Parameter.{name} must be a writable C-contiguous array")
        if not value.flags.aligned:
            # The optimizers update the array in place through typed C pointers.
            raise ValueError(
                f"Parameter.{name} must be aligned to its item size of {value.itemsize} "
                f"bytes: pass a copy, for example value.copy()"
            )
        return _plain_array(value)

    def __repr__(self):
        return f"Parameter(shape={self._data.shape}, dtype={self._data.dtype})"


# ---------------------------------------------------------------------------
# Linear layer
# ---------------------------------------------------------------------------


class _LinearBuffers:
    """Output and input-gradient buffers of a Linear layer for one batch size."""

    __slots__ = ("y", "dx")

    def __init__(self, y):
        self.y = y
        self.dx = None


class Linear:
    r"""Affine layer ``y = x @ weight + bias``.

    The weight has shape (in_features, out_features), the transpose of
    PyTorch's layout. Its entries are drawn uniformly from ``[-bound, bound]``
    with ``bound = sqrt(6 / in_features)`` for ``init="he"`` (for ReLU networks)
    or ``bound = sqrt(6 / (in_features + out_features))`` for ``init="glorot"``
    (for tanh and sigmoid). The draws are made in float64 and rounded to
    ``dtype``, so the same seed gives the same weights up to rounding in both
    dtypes. The bias starts at zero.

    Parameters
    ----------
    in_features, out_features : int
        Sizes of each input and output row. Zero is allowed.
    bias : bool, default True
        Whether to add a learned bias.
    dtype : {np.float32, np.float64}, default np.float32
        Dtype of the parameters and of the computation.
    init : {"he", "glorot"}, default "glorot"
        Uniform initialization of the weight.
    rng : None, int or numpy.random.Generator
        Source of the initial weights: None for fresh OS entropy, an int seed,
        or a Generator, which is advanced.

    Attributes
    ----------
    weight : Parameter, shape (in_features, out_features)
        May be replaced by another Parameter of exactly this shape and the
        layer's dtype. Anything else raises, because the compiled kernels
        trust these shapes.
    bias : Parameter of shape (out_features,), or None
        May be replaced by another Parameter of shape (out_features,) and the
        layer's dtype. Whether the layer has a bias is fixed at construction:
        a layer built with ``bias=False`` keeps ``bias = None``, and the bias of
        a layer built with ``bias=True`` cannot be set to None.
    in_features, out_features : int
        Read-only sizes.
    dtype : numpy.dtype
        Read-only dtype of the parameters and of the computation.

    Raises
    ------
    TypeError
        If a size is not an int, ``bias`` is not a bool, ``dtype`` is None, or
        ``rng`` is not None, an int or a Generator.
    ValueError
        If a size is negative or exceeds 2**31 - 1, ``dtype`` is not float32 or
        float64, ``init`` is unknown, or the seed is negative.

    Notes
    -----
    x (B, in_features) -> y (B, out_features). Inputs of another dtype are
    converted to ``dtype`` (see the module documentation).

    ``forward`` and ``backward`` raise RuntimeError if another thread is
    inside either of them on this layer. ``predict`` may run in any number of
    threads at once.

    Examples
    --------
    >>> import numpy as np
    >>> from nnback import Linear
    >>> layer = Linear(3, 2, rng=0)
    >>> layer
    Linear(3, 2, bias=True, dtype=float32)
    >>> layer.weight.shape, layer.bias.shape
    ((3, 2), (2,))
    >>> y = layer.forward(np.ones((4, 3), dtype=np.float32))
    >>> y.shape, y.dtype
    ((4, 2), dtype('float32'))
    >>> dx = layer.backward(np.ones((4, 2), dtype=np.float32))
    >>> dx.shape
    (4, 3)
    >>> print(layer.bias.grad)   # each entry sums its column of dy over 4 rows
    [4. 4.]
    """

    def __init__(self, in_features, out_features, *, bias=True, dtype=np.float32,
                 init="glorot", rng=None):
        in_features = _check_size("in_features", in_features)
        out_features = _check_size("out_features", out_features)
        _check_blas_sizes(in_features, out_features)
        dtype = _parameter_dtype(dtype)
        if init not in INITIALIZATIONS:
            raise ValueError(f"init must be 'he' or 'glorot', got {init!r}")
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be True or False, got {type(bias).__name__}")
        generator = _make_rng(rng)

        shape = (in_features, out_features)
        if init == "he":
            fan = in_features
        else:
            fan = in_features + out_features
        # A layer without inputs (or outputs) has an empty weight and draws nothing.
        bound = math.sqrt(6.0 / fan) if fan > 0 else 0.0
        weight = generator.uniform(-bound, bound, size=shape).astype(dtype)
        bias_values = np.zeros(out_features, dtype=dtype) if bias else None
        self._set_up(Parameter(weight), None if bias_values is None else Parameter(bias_values))

    @classmethod
    def _from_arrays(cls, weight, bias):
        """Build a layer around the float32 or float64 arrays ``weight`` and ``bias``, drawing nothing.

        ``weight`` is (in_features, out_features), and ``bias`` is None or an
        array of shape (out_features,) and the weight's dtype. The arrays are
        wrapped as :class:`Parameter` objects, without a copy where possible.
        """
        weight = Parameter(weight)
        if weight.data.ndim != 2:
            raise ValueError(f"weight must be 2-D (in_features, out_features), got shape {weight.shape}")
        _check_blas_sizes(*weight.shape)
        layer = cls.__new__(cls)
        layer._set_up(weight, None if bias is None else Parameter(bias))
        return layer

    def _set_up(self, weight, bias):
        """Store the Parameters and sizes, and create the empty forward state."""
        self._in_features, self._out_features = weight.shape
        self._dtype = weight.dtype
        self._has_bias = bias is not None
        self.weight = weight
        self._bias = None
        if bias is not None:
            self.bias = bias

        self._buffers = _BufferCache(self._create_buffers)
        self._x = None
        self._last = None
        self._use_guard = UseGuard()

    @property
    def in_features(self):
        """Size of each input row."""
        return self._in_features

    @property
    def out_features(self):
        """Size of each output row."""
        return self._out_features

    @property
    def dtype(self):
        """Dtype of the parameters and of the computation."""
        return self._dtype

    @property
    def weight(self):
        """The weight Parameter, of shape (in_features, out_features)."""
        return self._weight

    @weight.setter
    def weight(self, value):
        self._check_parameter("weight", value, (self._in_features, self._out_features))
        self._weight = value

    @property
    def bias(self):
        """The bias Parameter, of shape (out_features,), or None for a layer without bias."""
        return self._bias

    @bias.setter
    def bias(self, value):
        if value is None:
            if self._has_bias:
                raise ValueError(
                    f"{self!r}: bias cannot be set to None on a layer built with bias=True; "
                    f"create a Linear with bias=False instead"
                )
            return
        if not self._has_bias:
            raise ValueError(
                f"{self!r}: a layer built with bias=False cannot get a bias; create a "
                f"Linear with bias=True instead"
            )
        self._check_parameter("bias", value, (self._out_features,))
        self._bias = value

    def _check_parameter(self, name, value, shape):
        """Raise unless ``value`` is a Parameter of ``shape`` and the layer's dtype."""
        if not isinstance(value, Parameter):
            raise TypeError(
                f"Linear.{name} must be a Parameter, got {type(value).__name__}; to copy "
                f"values in, write layer.{name}.data[...] = values"
            )
        if value.shape != shape or value.dtype != self._dtype:
            raise ValueError(
                f"Linear.{name} must be a Parameter of shape {shape} and dtype "
                f"{self._dtype}, got shape {value.shape} and dtype {value.dtype}"
            )

    def parameters(self):
        """Return the trainable Parameters of the layer.

        Returns
        -------
        list of Parameter
            ``[weight, bias]``, or ``[weight]`` for a layer without bias.
        """
        if self.bias is None:
            return [self.weight]
        return [self.weight, self.bias]

    def _create_buffers(self, batch_size):
        return _LinearBuffers(np.empty((batch_size, self.out_features), dtype=self.dtype))

    def _check_input(self, x):
        """Return ``x`` validated and converted for the kernels: (B, in_features), layer dtype."""
        x = _as_real_array("x", x)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"{self!r} expects x of shape (B, {self.in_features}), got shape {x.shape}"
            )
        # The feature sizes were checked at construction.
        if x.shape[0] > _validation.MAX_BLAS_DIMENSION:
            _validation.require_blas_dimensions("x", x)
        return _as_dtype(x, self.dtype)

    def _bias_data(self):
        return None if self.bias is None else self.bias.data

    @exclusive
    def forward(self, x):
        """Compute ``y = x @ weight + bias`` and keep ``x`` for the backward pass.

        Parameters
        ----------
        x : array_like, shape (B, in_features)
            Converted to the layer's dtype if it has another dtype or is not
            C-contiguous. It must not be modified before ``backward``.

        Returns
        -------
        y : ndarray, shape (B, out_features)
            The layer's output buffer, of the layer's dtype, which the next
            call with the same batch size overwrites.

        Raises
        ------
        RuntimeError
            If another thread is using the layer.
        TypeError
            If x has a complex, object, string, datetime or void dtype.
        ValueError
            If x does not have shape (B, in_features), or B exceeds 2**31 - 1.

        Examples
        --------
        >>> import numpy as np
        >>> from nnback import Linear
        >>> layer = Linear(2, 1, dtype=np.float64)
        >>> layer.weight.data[...] = [[2.0], [-1.0]]
        >>> layer.bias.data[...] = [0.5]
        >>> print(layer.forward(np.array([[1.0, 1.0], [3.0, 2.0]])))
        [[1.5]
         [4.5]]
        """
        x = self._check_input(x)
        buffers = self._buffers.get(x.shape[0])
        x = _separate_from(x, buffers.y)

        _linear.forward(x, self.weight.data, self._bias_data(), buffers.y)
        self._x = x
        self._last = buffers
        return buffers.y

    @exclusive
    def backward(self, dy, *, need_dx=True):
        """Compute the gradients of the last forward call from ``dy = dL/dy``.

        Overwrites ``weight.grad`` with ``x.T @ dy`` and ``bias.grad`` with
        ``dy.sum(axis=0)``: each bias entry gets the sum of its column of dy
        over the B rows.

        Parameters
        ----------
        dy : array_like, shape (B, out_features)
            Gradient of the loss with respect to the last forward output.
            Converted to the layer's dtype if needed.
        need_dx : bool, default True
            If false, the input gradient is not computed and None is returned.

        Returns
        -------
        dx : ndarray of shape (B, in_features), or None
            ``dy @ weight.T`` in a buffer owned by the layer, of the layer's
            dtype, or None if ``need_dx`` is false.

        Raises
        ------
        RuntimeError
            If ``forward`` has not been called, or another thread is using the
            layer.
        TypeError
            If dy has a complex, object, string, datetime or void dtype, or
            ``need_dx`` is not a bool.
        ValueError
            If dy does not have the shape of the last forward output.

        Examples
        --------
        >>> import numpy as np
        >>> from nnback import Linear
        >>> layer = Linear(2, 1, dtype=np.float64)
        >>> layer.weight.data[...] = [[2.0], [-1.0]]
        >>> _ = layer.forward(np.array([[1.0, 1.0], [3.0, 2.0]]))
        >>> print(layer.backward(np.array([[1.0], [1.0]])))
        [[ 2. -1.]
         [ 2. -1.]]
        >>> print(layer.weight.grad)
        [[4.]
         [3.]]
        >>> print(layer.bias.grad)
        [2.]
        """
        _validation.check_flag("need_dx", need_dx)
        if self._x is None or self._last is None:
            raise RuntimeError(f"{self!r}: backward was called before forward")
        buffers = self._last
        dy = _as_real_array("dy", dy)
        if dy.shape != buffers.y.shape:
            raise ValueError(
                f"{self!r}: dy must have the shape {buffers.y.shape} of the last forward "
                f"output, got shape {dy.shape}"
            )
        dy = _as_dtype(dy, self.dtype)

        dx = None
        if need_dx:
            if buffers.dx is None:
                buffers.dx = np.empty(self._x.shape, dtype=self.dtype)
            dx = buffers.dx
        bias_grad = None if self.bias is None else self.bias.grad
        for output in (dx, self.weight.grad, bias_grad):
            if output is not None:
                dy = _separate_from(dy, output)

        _linear.backward(self._x, self.weight.data, dy, dx, self.weight.grad, bias_grad)
        return dx

    def predict(self, x):
        """Return ``x @ weight + bias`` as a new array, storing nothing.

        Parameters
        ----------
        x : array_like, shape (B, in_features)
            Converted to the layer's dtype if needed.

        Returns
        -------
        y : ndarray, shape (B, out_features)
            A new array of the layer's dtype.

        Raises
        ------
        TypeError
            If x has a complex, object, string, datetime or void dtype.
        ValueError
            If x does not have shape (B, in_features), or B exceeds 2**31 - 1.

        Examples
        --------
        >>> import numpy as np
        >>> from nnback import Linear
        >>> Linear(5, 2, rng=0).predict(np.zeros((3, 5))).shape
        (3, 2)
        """
        x = self._check_input(x)
        y = np.empty((x.shape[0], self.out_features), dtype=self.dtype)
        _linear.forward(x, self.weight.data, self._bias_data(), y)
        return y

    def __repr__(self):
        return (
            f"Linear({self.in_features}, {self.out_features}, bias={self.bias is not None}, "
            f"dtype={self.dtype.name})"
        )


# ---------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------


class _ActivationBuffers:
    """Output and input-gradient buffers of an activation for one input shape and dtype."""

    __slots__ = ("y", "dx")

    def __init__(self, shape, dtype):
        self.y = _FlatBuffer(shape, dtype)
        self.dx = None


class _Activation:
    """Element-wise activation over a compiled forward and backward kernel pair.

    ``forward`` and ``backward`` raise RuntimeError if another thread is inside
    either of them on this object. ``predict`` may run in any number of
    threads at once.

    Subclasses set ``_forward_kernel`` and ``_backward_kernel``, which take flat
    C-contiguous arrays (input, output) and (y, dy, dx) respectively.
    """

    _forward_kernel: Callable[[NDArray[Any], NDArray[Any]], None]
    _backward_kernel: Callable[[NDArray[Any], NDArray[Any], NDArray[Any]], None]

    def __init__(self):
        self._buffers = _BufferCache(self._create_buffers)
        self._last = None
        self._use_guard = UseGuard()

    @staticmethod
    def _create_buffers(key):
        shape, dtype = key
        return _ActivationBuffers(shape, dtype)

    def parameters(self):
        """Return an empty list, because activations have no parameters.

        Returns
        -------
        list
            ``[]``.
        """
        return []

    @staticmethod
    def _check_input(name, x):
        x = _as_real_array(name, x)
        return _as_dtype(x, _validation.computation_dtype(name, x))

    @exclusive
    def forward(self, x):
        """Apply the activation element-wise and keep the output for the backward pass.

        Parameters
        ----------
        x : array_like, any shape
            float32 and float64 are computed natively. float16 is computed in
            float32, and integer and bool inputs in float64.

        Returns
        -------
        y : ndarray, same shape as x
            The layer's output buffer, of the computation dtype, which the next
            call with the same shape and dtype overwrites.

        Raises
        ------
        RuntimeError
            If another thread is using the layer.
        TypeError
            If x has a complex, object, string, datetime or void dtype.

        Examples
        --------
        >>> import numpy as np
        >>> from nnback import ReLU
        >>> print(ReLU().forward(np.array([[-1.0, 2.0]])))
        [[0. 2.]]
        """
        x = self._check_input("x", x)
        buffers = self._buffers.get((x.shape, x.dtype))

        # The kernel accepts an output that is exactly its input. No other
        # overlap can occur, because the buffer is private and has x's shape.
        self._forward_kernel(x.reshape(-1), buffers.y.flat)
        self._last = buffers
        return buffers.y.array

    @exclusive
    def backward(self, dy):
        """Return ``dx = dL/dx`` from ``dy = dL/dy`` of the last forward call.

        The derivative is computed from the forward output y, as in
        :mod:`nnback.functional`.

        Parameters
        ----------
        dy : array_like, same shape as the last forward output
            Converted to the dtype of that output if needed.

        Returns
        -------
        dx : ndarray, same shape as dy
            A buffer owned by the layer, of the forward output's dtype.

        Raises
        ------
        RuntimeError
            If ``forward`` has not been called, or another thread is using the
            layer.
        TypeError
            If dy has a complex, object, string, datetime or void dtype.
        ValueError
            If dy does not have the shape of the last forward output.

        Examples
        --------
        >>> import numpy as np
        >>> from nnback import Sigmoid
        >>> layer = Sigmoid()
        >>> y = layer.forward(np.array([0.0, 0.0]))
        >>> print(layer.backward(np.array([1.0, 2.0])))   # dy * y * (1 - y)
        [0.25 0.5 ]
        """
        if self._last is None:
            raise RuntimeError(f"{self!r}: backward was called before forward")
        buffers = self._last
        y = buffers.y.array
        dy = _as_real_array("dy", dy)
        if dy.shape != y.shape:
            raise ValueError(
                f"{self!r}: dy must have the shape {y.shape} of the last forward output, "
                f"got shape {dy.shape}"
            )
        dy = _as_dtype(dy, y.dtype)

        if buffers.dx is None:
            buffers.dx = _FlatBuffer(y.shape, y.dtype)
        dx = buffers.dx

        self._backward_kernel(buffers.y.flat, dy.reshape(-1), dx.flat)
        return dx.array

    def predict(self, x, *, out=None):
        """Return the activation of ``x`` as a new array, storing nothing.

        Parameters
        ----------
        x : array_like, any shape
            Input, computed element-wise.
        out : ndarray, optional
            Receives the result instead of a new array. It must be a writable
            C-contiguous array of x's shape and computation dtype, and may be
            ``x`` itself.

        Returns
        -------
        y : ndarray, same shape as x
            A new array of the computation dtype, or ``out`` if it was given.

        Raises
        ------
        TypeError
            If x has a complex, object, string, datetime or void dtype, or
            ``out`` is not an ndarray.
        ValueError
            If ``out`` has the wrong shape or dtype, is not C-contiguous, is
            read-only, or overlaps x without being x itself.

        Examples
        --------
        >>> import numpy as np
        >>> from nnback import Tanh
        >>> x = np.array([0.0, 1.0])
        >>> Tanh().predict(x, out=x) is x
        True
        >>> print(np.round(x, 4))
        [0.     0.7616]
        """
        x = self._check_input("x", x)
        if out is None:
            out = np.empty_like(x)
        else:
            _validation.check_out(out, x.shape, x.dtype)
            _validation.check_out_overlap(out, {"x": x}, allow_same_buffer=True)
        # The kernel writes through a typed C pointer, so an out at an odd byte
        # offset receives a copy of an aligned result.
        target = out if out.flags.aligned else np.empty_like(x)
        # np.matrix.reshape(-1) stays 2-D, so a subclass is viewed as ndarray first.
        self._forward_kernel(x.reshape(-1), target.view(np.ndarray).reshape(-1))
        if target is not out:
            np.copyto(out, target)
        return out

    def __repr__(self):
        return f"{type(self).__name__}()"


class ReLU(_Activation):
    """Rectifier ``y = max(0, x)``, with ``dx = dy * (y > 0)``: the derivative at 0 is 0.

    Examples
    --------
    >>> import numpy as np
    >>> from nnback import ReLU
    >>> relu = ReLU()
    >>> print(relu.forward(np.array([[-1.0, 0.0, 2.0]])))
    [[0. 0. 2.]]
    >>> print(relu.backward(np.array([[3.0, 3.0, 3.0]])))
    [[0. 0. 3.]]
    """

    _forward_kernel = staticmethod(_activations.relu_forward)
    _backward_kernel = staticmethod(_activations.relu_backward)


class Sigmoid(_Activation):
    """Logistic sigmoid ``y = 1 / (1 + exp(-x))``, with ``dx = dy * y * (1 - y)``.

    Examples
    --------
    >>> import numpy as np
    >>> from nnback import Sigmoid
    >>> sigmoid = Sigmoid()
    >>> print(np.round(sigmoid.forward(np.array([-1.0, 0.0, 1.0])), 4))
    [0.2689 0.5    0.7311]
    >>> print(np.round(sigmoid.backward(np.ones(3)), 4))
    [0.1966 0.25   0.1966]
    """

    _forward_kernel = staticmethod(_activations.sigmoid_forward)
    _backward_kernel = staticmethod(_activations.sigmoid_backward)


class Tanh(_Activation):
    """Hyperbolic tangent ``y = tanh(x)``, with ``dx = dy * (1 - y * y)``.

    Examples
    --------
    >>> import numpy as np
    >>> from nnback import Tanh
    >>> tanh = Tanh()
    >>> print(np.round(tanh.forward(np.array([-1.0, 0.0, 1.0])), 4))
    [-0.7616  0.      0.7616]
    >>> print(np.round(tanh.backward(np.ones(3)), 4))
    [0.42 1.   0.42]
    """

    _forward_kernel = staticmethod(_activations.tanh_forward)
    _backward_kernel = staticmethod(_activations.tanh_backward)


_ACTIVATION_CLASSES = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}
_ACTIVATION_TYPES = frozenset(_ACTIVATION_CLASSES.values())


# ---------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------


class _LossBuffers:
    """Gradient, per-row loss and label buffers of the loss for one logits shape and dtype."""

    __slots__ = ("dz", "row_loss", "labels")

    def __init__(self, shape, dtype):
        self.dz = np.empty(shape, dtype=dtype)
        self.row_loss = None
        self.labels = None


class SoftmaxCrossEntropy:
    r"""Softmax cross-entropy between logits and class indices or probabilities.

    With ``p = softmax(z)`` row by row, the unreduced loss of row i is

    .. math:: l_i = -\sum_j t_{ij} \log p_{ij} = \mathrm{logsumexp}(z_i) - z_{i, c_i}

    where the second form is for a class index ``c_i``. It is computed in the log
    domain after subtracting the row maximum, never as ``log(p)``, and is not
    clipped. A probability target of exactly 0 contributes no loss. The
    reductions are ``"mean"`` (``sum_i l_i / B``, NaN for an empty batch),
    ``"sum"`` (``sum_i l_i``) and ``"none"`` (the vector ``l``).

    The gradient ``dL/dz = p * sum_j t_ij - t`` (``p - t`` for rows that sum to
    1), scaled by ``1 / B`` for the mean, is computed in the same pass as the
    loss and returned by :meth:`backward`. For ``"none"`` it is the gradient of
    ``sum_i l_i``.

    Parameters
    ----------
    reduction : {"mean", "sum", "none"}, default "mean"

    Raises
    ------
    ValueError
        If ``reduction`` is not "mean", "sum" or "none", here or on assignment.

    Notes
    -----
    logits (B, C); targets (B,) of any integer dtype with ``0 <= c_i < C``, or
    probabilities (B, C). Probability targets are converted to the dtype of the
    logits.

    ``forward`` and ``backward`` raise RuntimeError if another thread is inside
    either of them, or inside ``train_step`` with this loss. Give each thread
    its own loss object.

    Examples
    --------
    >>> import numpy as np
    >>> from nnback import SoftmaxCrossEntropy
    >>> loss = SoftmaxCrossEntropy()
    >>> z = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    >>> round(loss.forward(z, np.array([0, 2])), 4)
    0.6691
    >>> print(np.round(loss.backward(), 4))   # (softmax(z) - onehot(t)) / 2
    [[-0.1065  0.0533  0.0533]
     [ 0.1667  0.1667 -0.3333]]
    """

    def __init__(self, reduction="mean"):
        self.reduction = reduction
        self._buffers = _BufferCache(self._create_buffers)
        self._last = None
        self._use_guard = UseGuard()

    @property
    def reduction(self):
        """The reduction, "mean", "sum" or "none", which may be changed between calls."""
        return self._reduction

    @reduction.setter
    def reduction(self, value):
        _validation.check_reduction(value)
        self._reduction = value

    @staticmethod
    def _create_buffers(key):
        shape, dtype = key
        return _LossBuffers(shape, dtype)

    def parameters(self):
        """Return an empty list, because the loss has no parameters.

        Returns
        -------
        list
            ``[]``.
        """
        return []

    @exclusive
    def forward(self, logits, targets):
        """Compute the loss of ``logits`` against ``targets``, and its gradient for backward.

        Parameters
        ----------
        logits : array_like, shape (B, C)
            float32 and float64 are computed natively, and other real dtypes
            are converted as in :mod:`nnback.functional`.
        targets : array_like, shape (B,) of integers or (B, C) of floats
            Class indices in ``[0, C)`` of any integer dtype, or probabilities,
            which are converted to the dtype of the logits.

        Returns
        -------
        loss : float or ndarray of shape (B,)
            A Python float for "mean" and "sum" (NaN for the mean over B == 0
            rows). For "none", the per-row losses in a buffer owned by the
            loss, of the logits' computation dtype.

        Raises
        ------
        RuntimeError
            If another thread is using the loss.
        TypeError
            For bool, 1-D floating-point or non-numeric targets, and for
            logits of a complex, object, string, datetime or void dtype.
        ValueError
            If logits is not 2-D, or the targets' shape does not match it.
        IndexError
            For the first class index outside ``[0, C)``.

        Examples
        --------
        >>> import numpy as np
        >>> from nnback import SoftmaxCrossEntropy
        >>> loss = SoftmaxCrossEntropy(reduction="none")
        >>> z = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
        >>> print(np.round(loss.forward(z, np.array([0, 2])), 4))
        [0.2395 1.0986]
        """
        z = _as_real_array("logits", logits)
        _validation.require_ndim("logits", z, 2, "(B, C)")
        z = _as_dtype(z, _validation.computation_dtype("logits", z))
        if not isinstance(targets, np.ndarray):
            targets = _validation.as_array("targets", targets)

        n_rows = z.shape[0]
        buffers = self._buffers.get((z.shape, z.dtype))
        z = _separate_from(z, buffers.dz)
        gradient_scale = 1.0 / n_rows if self.reduction == "mean" and n_rows > 0 else 1.0
        row_loss = None
        if self.reduction == "none":
            if buffers.row_loss is None:
                buffers.row_loss = np.empty(n_rows, dtype=z.dtype)
            row_loss = buffers.row_loss

        if _validation.is_class_index_targets(targets):
            labels = self._checked_labels(targets, z.shape, buffers)
            total = _softmax.cross_entropy_labels(z, labels, gradient_scale, buffers.dz, row_loss)
        else:
            probabilities = _as_dtype(targets, z.dtype)
            _validation.check_probability_shape(probabilities, z.shape)
            probabilities = _separate_from(probabilities, buffers.dz)
            total = _softmax.cross_entropy_probabilities(
                z, probabilities, gradient_scale, buffers.dz, row_loss
            )
        self._last = buffers

        if self.reduction == "none":
            return row_loss
        if self.reduction == "sum":
            return float(total)
        # The mean over an empty batch is 0/0, NaN.
        return float(total) / n_rows if n_rows > 0 else float("nan")

    @staticmethod
    def _checked_labels(targets, z_shape, buffers):
        """Range-check class indices and return them as C-contiguous intp for the kernel."""
        _validation.check_class_index_shape(targets, z_shape)
        labels = _validation.as_native_labels(targets)
        position = _softmax.first_invalid_label(labels, z_shape[1])
        if position >= 0:
            raise _validation.invalid_label_error(labels, position, z_shape)
        if labels.dtype == np.intp:
            return labels
        # Every label is in [0, C) now, so the cast to intp is exact.
        if buffers.labels is None:
            buffers.labels = np.empty(z_shape[0], dtype=np.intp)
        np.copyto(buffers.labels, labels, casting="unsafe")
        return buffers.labels

    @exclusive
    def backward(self):
        """Return ``dL/dlogits`` of the last forward call, a buffer owned by the loss.

        The gradient is ``p * sum_j t_ij - t`` row by row, divided by B for
        "mean". For "none" it is the gradient of the summed row losses.

        Returns
        -------
        dz : ndarray, shape (B, C)
            Of the logits' computation dtype. The next forward call with the
            same shape and dtype overwrites it.

        Raises
        ------
        RuntimeError
            If ``forward`` has not been called, or another thread is using the
            loss.
        """
        if self._last is None:
            raise RuntimeError(f"{self!r}: backward was called before forward")
        return self._last.dz

    def __repr__(self):
        return f"SoftmaxCrossEntropy(reduction={self.reduction!r})"


# ---------------------------------------------------------------------------
# Sequential container and builders
# ---------------------------------------------------------------------------


# Layer types whose predict always returns a new array.
_FRESH_OUTPUT_TYPES = frozenset({Linear}) | _ACTIVATION_TYPES


def _feature_sizes(layer):
    """Return (in_features, out_features) of a layer, or None if it keeps the width or is unknown."""
    if isinstance(layer, Linear):
        return layer.in_features, layer.out_features
    if isinstance(layer, Sequential):
        return layer.feature_sizes
    return None


class Sequential:
    """A chain of layers applied in order.

    ``forward`` and ``backward`` follow the layer contract of this module (work
    buffers, ``.grad`` overwritten). :meth:`predict` computes the same output
    into new arrays without storing anything, so several threads may call it
    on one model at the same time, as long as no thread trains the model.

    ``forward``, ``backward`` and ``nnback.train_step`` raise RuntimeError if
    another thread is inside one of them on this model, and so does
    ``predict``, because a training step in progress changes the weights that
    it reads. An optimizer's ``step`` called on its own is not detected by the
    model, so do not call ``predict`` while another thread runs it.

    Parameters
    ----------
    *layers
        Layer objects with ``forward``, ``backward``, ``parameters`` and
        ``predict``. A layer object may appear only once. Consecutive Linear
        layers (with only activations between them) must have matching sizes,
        and every parameter must have the same dtype.

    Attributes
    ----------
    layers : tuple
        The layers in order. Read-only: build a new Sequential to change them.
    dtype : numpy.dtype or None
        Dtype of the parameters, None for a model without parameters.
    feature_sizes : (int, int) or None
        ``(in_features, out_features)`` of the model, None without a Linear layer.

    Raises
    ------
    TypeError
        If a layer is a SoftmaxCrossEntropy or lacks one of the four methods.
    ValueError
        If no layer is given, a layer object appears twice (also inside a
        nested Sequential), two layers share a Parameter, consecutive Linear
        sizes do not match, or the parameters have more than one dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from nnback import Linear, ReLU, Sequential
    >>> model = Sequential(Linear(4, 8, rng=0), ReLU(), Linear(8, 3, rng=1))
    >>> model.feature_sizes, model.dtype
    ((4, 3), dtype('float32'))
    >>> len(model.parameters())
    4
    >>> model.forward(np.zeros((5, 4), dtype=np.float32)).shape
    (5, 3)
    """

    def __init__(self, *layers):
        if not layers:
            raise ValueError("Sequential needs at least one layer, got none")
        for index, layer in enumerate(layers):
            if isinstance(layer, type):
                raise TypeError(
                    f"layers[{index}] is the class {layer.__name__}, not a layer: pass an "
                    f"instance such as {layer.__name__}()"
                )
            if isinstance(layer, SoftmaxCrossEntropy):
                raise TypeError(
                    f"layers[{index}] is a loss, not a layer: keep SoftmaxCrossEntropy "
                    f"outside the Sequential and pass it to train_step"
                )
            missing = [
                name for name in ("forward", "backward", "parameters", "predict")
                if not callable(getattr(layer, name, None))
            ]
            if missing:
                raise TypeError(
                    f"layers[{index}] ({type(layer).__name__}) is not a layer: it has no "
                    f"{', '.join(missing)} method"
                )
        self._layers = tuple(layers)
        self._use_guard = UseGuard()

        self._check_unique_layers()
        self._check_unique_parameters()
        self._check_feature_sizes()
        self._check_dtypes()

    def _positioned_layers(self, prefix="layers"):
        """Yield (position, layer) for every layer, including those of nested Sequentials."""
        for index, layer in enumerate(self.layers):
            position = f"{prefix}[{index}]"
            yield position, layer
            if isinstance(layer, Sequential):
                yield from layer._positioned_layers(f"{position}.layers")

    def _check_unique_layers(self):
        # A layer keeps the state of its last forward call, so one object
        # cannot serve two positions, also not inside a nested Sequential.
        seen: dict[int, str] = {}
        for position, layer in self._positioned_layers():
            if id(layer) in seen:
                raise ValueError(
                    f"{position} is the same object as {seen[id(layer)]} "
                    f"({layer!r}): create a separate layer for each position"
                )
            seen[id(layer)] = position

    def _check_unique_parameters(self):
        # backward overwrites .grad, so a Parameter shared by two layers would
        # get the gradient of one use only, and tied weights are not supported.
        seen: dict[int, str] = {}
        for position, layer in self._positioned_layers():
            if isinstance(layer, Sequential):
                continue
            for parameter in layer.parameters():
                if id(parameter) in seen:
                    raise ValueError(
                        f"{position} uses the same Parameter ({parameter!r}) as "
                        f"{seen[id(parameter)]}: shared (tied) Parameters are not "
                        f"supported, give each layer its own Parameter"
                    )
                seen[id(parameter)] = position

    def _check_feature_sizes(self):
        previous_index, previous_out = None, None
        for index, layer in enumerate(self.layers):
            sizes = _feature_sizes(layer)
            if sizes is None:
                continue
            in_features, out_features = sizes
            if previous_out is not None and in_features != previous_out:
                raise ValueError(
                    f"layers[{index}] ({layer!r}) takes {in_features} features, but "
                    f"layers[{previous_index}] ({self.layers[previous_index]!r}) "
                    f"outputs {previous_out}"
                )
            previous_index, previous_out = index, out_features

    def _check_dtypes(self):
        dtypes = {parameter.dtype for parameter in self.parameters()}
        if len(dtypes) > 1:
            names = ", ".join(sorted(dtype.name for dtype in dtypes))
            raise ValueError(f"all layers of a Sequential must have one dtype, got {names}")

    @property
    def layers(self):
        """The layers in order, as a tuple."""
        return self._layers

    @layers.setter
    def layers(self, value):
        # Compiled training state is cached per model and built from its
        # layers, so the layer list must not change after construction.
        raise AttributeError(
            "Sequential.layers is read-only: build a new model with Sequential(*layers)"
        )

    @layers.deleter
    def layers(self):
        raise AttributeError(
            "Sequential.layers is read-only: build a new model with Sequential(*layers)"
        )

    @property
    def dtype(self):
        """Dtype of the parameters, or None for a model without parameters."""
        parameters = self.parameters()
        return parameters[0].dtype if parameters else None

    @property
    def feature_sizes(self):
        """(in_features, out_features) of the model, or None if it has no Linear layer."""
        sizes = [s for s in (_feature_sizes(layer) for layer in self.layers) if s is not None]
        if not sizes:
            return None
        return sizes[0][0], sizes[-1][1]

    def parameters(self):
        """Return the Parameters of every layer, in layer order.

        Returns
        -------
        list of Parameter
            For each Linear layer its weight, then its bias if it has one.
        """
        return [parameter for layer in self.layers for parameter in layer.parameters()]

    @exclusive
    def forward(self, x):
        """Run every layer's forward pass and return the output buffer of the last layer.

        Parameters
        ----------
        x : array_like, shape (B, in_features)
            Input of the first layer, which must not be modified before
            ``backward``.

        Returns
        -------
        y : ndarray, shape (B, out_features)
            A buffer owned by the last layer, which the next forward call with
            the same batch shape overwrites.

        Raises
        ------
        RuntimeError
            If another thread is using the model or one of its layers.
        TypeError, ValueError
            As raised by the layers, for example ValueError for x of another
            number of features.
        """
        for layer in self.layers:
            x = layer.forward(x)
        return x

    @exclusive
    def backward(self, dy, *, need_dx=False):
        """Backpropagate ``dy = dL/dy`` of the last forward call through every layer.

        Overwrites the ``.grad`` of every Parameter.

        Parameters
        ----------
        dy : array_like, shape (B, out_features)
            Gradient of the loss with respect to the last forward output.
        need_dx : bool, default False
            Whether to compute the gradient with respect to the model input.
            If false, the work that only the input gradient needs is skipped:
            the ``dx`` of the first layer with parameters and everything
            before it.

        Returns
        -------
        dx : ndarray of shape (B, in_features), or None
            ``dL/dx`` in a layer-owned buffer if ``need_dx`` is true, else None.

        Raises
        ------
        RuntimeError
            If ``forward`` has not been called, or another thread is using the
            model or one of its layers.
        TypeError
            If ``need_dx`` is not a bool, and as raised by the layers.
        ValueError
            If two layers share a Parameter (assigned after construction), and
            as raised by the layers, for example for dy of the wrong shape.

        Examples
        --------
        >>> import numpy as np
        >>> from nnback import Linear, ReLU, Sequential
        >>> model = Sequential(Linear(4, 8, rng=0), ReLU(), Linear(8, 3, rng=1))
        >>> y = model.forward(np.ones((5, 4), dtype=np.float32))
        >>> model.backward(np.ones_like(y), need_dx=True).shape
        (5, 4)
        >>> model[0].weight.grad.shape
        (4, 8)
        """
        _validation.check_flag("need_dx", need_dx)
        self._check_unique_parameters()
        first_trainable = next(
            (index for index, layer in enumerate(self.layers) if layer.parameters()), None
        )
        for index in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[index]
            if not need_dx and index == first_trainable:
                if isinstance(layer, (Linear, Sequential)):
                    layer.backward(dy, need_dx=False)
                else:
                    layer.backward(dy)
                return None
            dy = layer.backward(dy)
        return dy if need_dx else None

    def predict(self, x):
        """Return the model output for ``x`` as a new array, storing no state.

        Layer caches and buffers are left untouched, so ``predict`` may run
        between ``forward`` and ``backward``, and several threads may call it
        at once.

        Parameters
        ----------
        x : array_like, shape (B, in_features)
            Input of the first layer.

        Returns
        -------
        y : ndarray, shape (B, out_features)
            A new array of the model's dtype.

        Raises
        ------
        RuntimeError
            If another thread is inside ``forward``, ``backward`` or
            ``train_step`` of this model when the call starts, or enters one of
            them before it ends, because the update may change the weights
            during the call.
        TypeError, ValueError
            As raised by the layers, for example ValueError for x of another
            number of features.

        Examples
        --------
        >>> import numpy as np
        >>> from nnback import mlp
        >>> model = mlp([4, 8, 3], rng=0)
        >>> model.predict(np.zeros((2, 4))).shape
        (2, 3)
        """
        guard = self._use_guard
        if guard.held_by_other_thread():
            if guard.held_before_fork():
                raise forked_in_use_error(self)
            raise RuntimeError(
                "Sequential.predict was called while another thread is training this "
                "model. Predict on a copy (copy.deepcopy(model)) or after training ends"
            )
        entries_before = guard.entry_count
        # An activation overwrites its input only when that array was allocated
        # by this call. Linear and the activations of this module always return
        # a new array. Any other layer may return its input, a view of it, or
        # an array that it keeps, so its output is never overwritten.
        output_is_fresh = False
        for layer in self._layers:
            if output_is_fresh and type(layer) in _ACTIVATION_TYPES:
                x = layer.predict(x, out=x)
            else:
                x = layer.predict(x)
                output_is_fresh = type(layer) in _FRESH_OUTPUT_TYPES

        if guard.entry_count != entries_before or guard.held_by_other_thread():
            raise RuntimeError(
                "Sequential.predict overlapped a forward, backward or train_step call on "
                "this model in another thread, so the result may mix weights from before "
                "and after an update. Predict on a copy (copy.deepcopy(model)) or after "
                "training ends"
            )
        return x

    def save(self, path):
        """Write the architecture and every parameter to the .npz file ``path``.

        See :func:`nnback.serialization.save`, which this method calls.

        Parameters
        ----------
        path : str or os.PathLike
            Written exactly as given, atomically: no ``.npz`` suffix is appended.

        Raises
        ------
        TypeError
            If a layer is not a Linear, ReLU, Sigmoid or Tanh layer.
        ValueError
            If ``path`` is empty or names an existing file that is not a
            regular file.
        FileNotFoundError
            If the directory of ``path`` does not exist.

        Examples
        --------
        >>> import os, tempfile
        >>> from nnback import Sequential, mlp
        >>> model = mlp([4, 8, 3], rng=0)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "model.npz")
        ...     model.save(path)
        ...     restored = Sequential.load(path)
        >>> restored.feature_sizes
        (4, 3)
        """
        from nnback import serialization

        serialization.save(self, path)

    @staticmethod
    def load(path):
        """Read a model written by :meth:`save`. See :func:`nnback.serialization.load`.

        Parameters
        ----------
        path : str or os.PathLike
            Read exactly as given.

        Returns
        -------
        Sequential
            A new model with the saved architecture, dtype and parameters.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file is not a valid nnback model file.
        """
        from nnback import serialization

        return serialization.load(path)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self):
        inner = ",\n".join(f"  {layer!r}" for layer in self.layers)
        return f"Sequential(\n{inner}\n)"


def mlp(layer_sizes, activation="relu", *, dtype=np.float32, rng=None):
    """Build a multilayer perceptron that outputs logits.

    Parameters
    ----------
    layer_sizes : sequence of int
        ``[n_inputs, hidden_1, ..., n_outputs]``, at least two positive sizes.
    activation : {"relu", "tanh", "sigmoid"}, default "relu"
        Activation after every Linear layer except the last.
    dtype : {np.float32, np.float64}, default np.float32
    rng : None, int or numpy.random.Generator
        Source of the initial weights. An int seed makes the weights
        reproducible. The layers draw from one Generator in order.

    Returns
    -------
    Sequential
        Linear, activation, Linear, ..., Linear. Every Linear layer, including
        the last, uses He initialization for "relu" and Glorot for "tanh" and
        "sigmoid".

    Raises
    ------
    TypeError
        If a size is not an int, ``dtype`` is None, or ``rng`` is not None, an
        int or a Generator.
    ValueError
        If fewer than two sizes are given, a size is not positive or exceeds
        2**31 - 1, the activation is unknown, ``dtype`` is not float32 or
        float64, or the seed is negative.

    Examples
    --------
    >>> from nnback import mlp
    >>> mlp([4, 16, 3], activation="tanh", rng=0)
    Sequential(
      Linear(4, 16, bias=True, dtype=float32),
      Tanh(),
      Linear(16, 3, bias=True, dtype=float32)
    )
    """
    try:
        sizes = list(layer_sizes)
    except TypeError:
        raise TypeError(
            f"layer_sizes must be a sequence of ints such as [n_inputs, n_hidden, n_outputs], "
            f"got {type(layer_sizes).__name__}"
        ) from None
    if len(sizes) < 2:
        raise ValueError(
            f"layer_sizes must list at least the input and output sizes, got {sizes}"
        )
    for index, size in enumerate(sizes):
        if _check_size(f"layer_sizes[{index}]", size) == 0:
            raise ValueError(f"layer_sizes[{index}] must be positive, got {size}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be 'relu', 'tanh' or 'sigmoid', got {activation!r}")
    init = "he" if activation == "relu" else "glorot"
    generator = _make_rng(rng)

    layers: list[Linear | _Activation] = []
    n_linear = len(sizes) - 1
    for index in range(n_linear):
        layers.append(
            Linear(sizes[index], sizes[index + 1], dtype=dtype, init=init, rng=generator)
        )
        if index < n_linear - 1:
            layers.append(_ACTIVATION_CLASSES[activation]())
    return Sequential(*layers)
