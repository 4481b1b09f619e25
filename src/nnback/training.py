"""One training step: forward, loss, backward and the optimizer update.

``train_step`` runs a :class:`~nnback.layers.Sequential` of dense blocks
(``Linear``, optionally followed by one ``ReLU``, ``Sigmoid`` or ``Tanh``)
with a :class:`~nnback.layers.SoftmaxCrossEntropy` loss on class indices in
one compiled call (``nnback._network``). Any other model, loss or target kind
goes through the layers' own ``forward`` and ``backward``.

On the compiled path with plain SGD (no momentum), the weight update is folded
into the weight-gradient product, so ``.grad`` is not written. Every other
optimizer reads ``.grad`` as usual. The compiled path also leaves no forward
state in the layers, so call ``model.forward`` again before a separate
``model.backward``.
"""

import weakref

import numpy as np
from numpy.typing import ArrayLike

from nnback import _concurrency, _network, _softmax, _validation
from nnback.layers import Linear, ReLU, Sequential, Sigmoid, SoftmaxCrossEntropy, Tanh
from nnback.optim import Optimizer

__all__ = ["NonFiniteLossError", "train_step"]

_ACTIVATION_CODES = {
    ReLU: _network.Activation.RELU,
    Sigmoid: _network.Activation.SIGMOID,
    Tanh: _network.Activation.TANH,
}


class NonFiniteLossError(FloatingPointError, ValueError):
    """A training loop met a batch whose loss is NaN or infinite.

    Raised by ``nnback.MLPClassifier`` (with ``on_nonfinite="raise"``) and used
    by ``nnback train`` to stop at the first such batch. It is a
    FloatingPointError, because the arithmetic overflowed or produced NaN, and
    also a ValueError, because scikit-learn's own MLPClassifier raises
    ValueError for non-finite weights and code written for it catches that.

    Attributes
    ----------
    epoch : int
        The epoch, counted from 1.
    batch : int
        The batch within the epoch, counted from 1.
    loss : float
        The loss of that batch: ``nan``, ``inf`` or ``-inf``.
    """

    def __init__(self, message, epoch, batch, loss):
        super().__init__(message)
        self.epoch = epoch
        self.batch = batch
        self.loss = loss

    def __reduce__(self):
        # The default reduction passes only ``args`` (the message) to __init__.
        return type(self), (str(self), self.epoch, self.batch, self.loss)


# Compiled chains of the models seen so far, rebuilt when a layer's
# Parameters are replaced.
_chains: "weakref.WeakKeyDictionary[Sequential, _CachedChain]" = weakref.WeakKeyDictionary()


def _dense_blocks(model):
    """Return (linear layers, activation codes) if ``model`` is a chain of dense blocks, else None."""
    if type(model) is not Sequential:
        return None
    linears, codes = [], []
    for layer in model.layers:
        if type(layer) is Linear:
            linears.append(layer)
            codes.append(_network.Activation.IDENTITY)
        elif type(layer) in _ACTIVATION_CODES and codes and codes[-1] == _network.Activation.IDENTITY:
            codes[-1] = _ACTIVATION_CODES[type(layer)]
        else:
            return None
    if not linears or codes[-1] != _network.Activation.IDENTITY:
        # The logits must come straight from the last Linear layer.
        return None
    return linears, codes


def _compiled_chain(model):
    """Return the cached DenseChain of ``model``, or None if it has another architecture."""
    cached = _chains.get(model)
    if cached is not None and cached.matches(model):
        return cached.compiled

    blocks = _dense_blocks(model)
    if blocks is None:
        return None
    linears, codes = blocks
    compiled = _network.DenseChain(
        [layer.weight for layer in linears], [layer.bias for layer in linears], codes
    )
    _chains[model] = _CachedChain(model.layers, linears, compiled)
    return compiled


class _CachedChain:
    """A compiled chain with the layers and Parameters it was built from."""

    __slots__ = ("layers", "linears", "compiled")

    def __init__(self, layers, linears, compiled):
        self.layers = tuple(layers)
        self.linears = linears
        self.compiled = compiled

    def matches(self, model):
        """Return whether ``model`` still has these layers and Parameters."""
        layers = model.layers
        if len(layers) != len(self.layers) or any(
            mine is not theirs for mine, theirs in zip(self.layers, layers)
        ):
            return False
        weights, biases = self.compiled.weights, self.compiled.biases
        return all(
            weights[index] is layer.weight and biases[index] is layer.bias
            for index, layer in enumerate(self.linears)
        )


def _plain_sgd_rates(optimizer, model):
    """Return (lr, weight_decay) if ``optimizer`` is momentum-free SGD over exactly the model's Parameters."""
    from nnback.optim import SGD

    if type(optimizer) is not SGD or optimizer.momentum != 0:
        return None
    model_parameters = model.parameters()
    if len(optimizer.params) != len(model_parameters) or any(
        mine is not theirs for mine, theirs in zip(optimizer.params, model_parameters)
    ):
        return None
    return optimizer.lr, optimizer.weight_decay


def _checked_input(x, chain, n_features):
    """Return ``x`` as a C-contiguous (B, n_features) array of the chain's dtype."""
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "fiub":
        x = _validation.as_array("x", x)
        if x.dtype.kind not in "fiub":
            raise TypeError(
                f"x has unsupported dtype {x.dtype}: expected a real floating-point, "
                f"integer or bool array"
            )
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ValueError(f"the model expects x of shape (B, {n_features}), got shape {x.shape}")
    if x.shape[0] > _validation.MAX_BLAS_DIMENSION:
        _validation.require_blas_dimensions("x", x)
    if x.dtype != chain.dtype or not x.flags.c_contiguous or not x.flags.aligned:
        # np.array copies, and so also aligns a view at an odd byte offset.
        x = np.array(x, dtype=chain.dtype, order="C")
    return x


def _checked_labels(targets, n_samples, n_classes):
    """Return class indices as C-contiguous intp after the range check."""
    z_shape = (n_samples, n_classes)
    _validation.check_class_index_shape(targets, z_shape)
    labels = _validation.as_native_labels(targets)
    position = _softmax.first_invalid_label(labels, n_classes)
    if position >= 0:
        raise _validation.invalid_label_error(labels, position, z_shape)
    if labels.dtype != np.intp:
        labels = labels.astype(np.intp)
    return labels


# The methods that train_step calls on each of its objects.
_STEP_METHODS = (
    ("model", ("forward", "backward", "parameters"), "a Sequential or another layer"),
    ("loss", ("forward", "backward"), "a SoftmaxCrossEntropy instance"),
    ("optimizer", ("step",), "an SGD or Adam instance"),
)


def _check_step_objects(model, loss, optimizer):
    """Raise unless model, loss and optimizer fit together, before any of them is used.

    An object without the methods that ``train_step`` calls, a class in place of
    an instance, or a loss passed as the model raises TypeError. An optimizer
    that updates a Parameter which is not in the model raises ValueError,
    because such a step would never train the model.
    """
    for (name, methods, expected), value in zip(_STEP_METHODS, (model, loss, optimizer)):
        missing = [method for method in methods if not callable(getattr(value, method, None))]
        if isinstance(value, type) or missing:
            if isinstance(value, type):
                described = f"the class {value.__name__}"
            else:
                described = type(value).__name__
            raise TypeError(f"{name} must be {expected}, got {described}")
    if isinstance(model, SoftmaxCrossEntropy):
        raise TypeError(
            f"model is the loss {model!r}: pass train_step(model, loss, optimizer, x, targets)"
        )
    if not hasattr(loss, "reduction"):
        raise TypeError(
            f"loss must be {_STEP_METHODS[1][2]}, got {type(loss).__name__}, which has no "
            f"reduction attribute"
        )

    parameters = model.parameters()
    model_parameters = {id(parameter) for parameter in parameters}
    # This runs on every step, so the detailed check that names the layers
    # runs only when the cheap count shows a Parameter listed twice.
    if isinstance(model, Sequential) and len(model_parameters) != len(parameters):
        model._check_unique_parameters()
    if isinstance(optimizer, Optimizer):
        for index, parameter in enumerate(optimizer.params):
            if id(parameter) not in model_parameters:
                raise ValueError(
                    f"optimizer.params[{index}] ({parameter!r}) is not a Parameter of the "
                    f"model: create the optimizer from model.parameters(), and again after "
                    f"replacing a layer's weight or bias"
                )


def train_step(
    model: Sequential,
    loss: SoftmaxCrossEntropy,
    optimizer: Optimizer,
    x: ArrayLike,
    targets: ArrayLike,
) -> float:
    """Run one training step and return the loss before the update, as a float.

    Computes the model output for ``x``, the loss against ``targets``, the
    gradients of every Parameter and the optimizer update. The loss must reduce
    to a scalar ("mean" or "sum").

    Parameters
    ----------
    model : Sequential
        The network, which outputs logits of shape (B, n_classes).
    loss : SoftmaxCrossEntropy
        The loss, with reduction "mean" or "sum".
    optimizer : SGD or Adam
        Updates the model's Parameters.
    x : array_like, shape (B, n_features)
        Converted to the model's dtype if it has another dtype or is not
        C-contiguous.
    targets : array_like
        Class indices of shape (B,) of any integer dtype, or probabilities of
        the logits' shape (B, n_classes).

    Returns
    -------
    float
        The loss of this batch, computed before the update.

    Raises
    ------
    ValueError
        If the loss has ``reduction="none"``, x has no rows, x or targets have
        the wrong shape, two layers of the model share a Parameter, or the
        optimizer updates a Parameter that is not in the model.
    TypeError
        If x or targets have an unsupported dtype, or model, loss or optimizer
        lacks a method that the step calls (as for swapped arguments).
    IndexError
        For the first class index outside ``[0, n_classes)``, before any
        parameter changes.
    RuntimeError
        If another thread is using the model, the loss or the optimizer.

    Notes
    -----
    A NaN or infinite loss is returned like any other value, and the update
    has already been applied with the gradients of that batch, which are then
    usually non-finite too. Only the caller knows the epoch and the batch
    number and whether to stop, so the training loops of ``nnback train`` and
    ``MLPClassifier`` check each returned loss with ``math.isfinite`` and, by
    default, raise :class:`NonFiniteLossError`.

    The step holds the thread guards of ``model``, ``loss`` and ``optimizer``
    from start to end. A call from a second thread that uses one of them while
    the first call runs raises RuntimeError. Give each thread its own model,
    loss and optimizer.

    Examples
    --------
    >>> import numpy as np
    >>> from nnback import SGD, SoftmaxCrossEntropy, mlp, train_step
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(64, 4)).astype(np.float32)
    >>> y = (x[:, 0] > 0).astype(np.int64)        # class indices, shape (64,)
    >>> model = mlp([4, 16, 2], rng=0)
    >>> loss = SoftmaxCrossEntropy()
    >>> optimizer = SGD(model.parameters(), lr=0.5)
    >>> losses = [train_step(model, loss, optimizer, x, y) for _ in range(50)]
    >>> losses[-1] < 0.5 * losses[0]
    True
    """
    _check_step_objects(model, loss, optimizer)
    if loss.reduction == "none":
        raise ValueError(
            "train_step needs a scalar loss: use SoftmaxCrossEntropy(reduction='mean') or 'sum'"
        )

    guards = _concurrency.enter_all((model, loss, optimizer))
    try:
        return _run_step(model, loss, optimizer, x, targets)
    finally:
        _concurrency.exit_all(guards)


def _run_step(model, loss, optimizer, x, targets):
    """Run the body of ``train_step``, whose caller holds the guards of its objects."""
    if not isinstance(x, np.ndarray):
        x = _validation.as_array("x", x)
    if not isinstance(targets, np.ndarray):
        targets = _validation.as_array("targets", targets)
    # An empty batch has no gradient, but weight decay and momentum would still
    # move the parameters, so it is rejected rather than stepped.
    if x.ndim >= 1 and x.shape[0] == 0:
        raise ValueError(
            f"x has shape {x.shape} with no samples: train_step needs a batch of at "
            "least one sample"
        )
    chain = None
    if type(loss) is SoftmaxCrossEntropy and _validation.is_class_index_targets(targets):
        chain = _compiled_chain(model)
    if chain is None:
        value = loss.forward(model.forward(x), targets)
        model.backward(loss.backward())
        optimizer.step()
        return value

    n_features, n_classes = model.feature_sizes
    x = _checked_input(x, chain, n_features)
    labels = _checked_labels(targets, x.shape[0], n_classes)
    rates = _plain_sgd_rates(optimizer, model)
    mean = loss.reduction == "mean"

    if rates is not None:
        learning_rate, weight_decay = rates
        return chain.train_step(x, labels, True, learning_rate, weight_decay, mean)
    value = chain.train_step(x, labels, False, 0.0, 0.0, mean)
    optimizer.step()
    return value
