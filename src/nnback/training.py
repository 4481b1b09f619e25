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

from nnback import _network, _softmax, _validation
from nnback.layers import Linear, ReLU, Sequential, Sigmoid, SoftmaxCrossEntropy, Tanh

__all__ = ["train_step"]

_ACTIVATION_CODES = {
    ReLU: _network.Activation.RELU,
    Sigmoid: _network.Activation.SIGMOID,
    Tanh: _network.Activation.TANH,
}

# Compiled chains of the models seen so far, rebuilt when a layer's
# Parameters are replaced.
_chains = weakref.WeakKeyDictionary()


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
        x = np.asarray(x)
        if x.dtype.kind not in "fiub":
            raise TypeError(
                f"x has unsupported dtype {x.dtype}: expected a real floating-point, "
                f"integer or bool array"
            )
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ValueError(f"the model expects x of shape (B, {n_features}), got shape {x.shape}")
    if x.shape[0] > _validation.MAX_BLAS_DIMENSION:
        _validation.require_blas_dimensions("x", x)
    if x.dtype != chain.dtype or not x.flags.c_contiguous:
        x = np.ascontiguousarray(x, dtype=chain.dtype)
    return x


def _checked_labels(targets, n_samples, n_classes):
    """Return class indices as C-contiguous intp after the range check."""
    z_shape = (n_samples, n_classes)
    _validation.check_class_index_shape(targets, z_shape)
    # The compiled check reads native byte order only.
    labels = np.ascontiguousarray(targets, dtype=targets.dtype.newbyteorder("="))
    position = _softmax.first_invalid_label(labels, n_classes)
    if position >= 0:
        raise _validation.invalid_label_error(labels, position, z_shape)
    if labels.dtype != np.intp:
        labels = labels.astype(np.intp)
    return labels


def train_step(model, loss, optimizer, x, targets):
    """Run one training step and return the loss before the update, as a float.

    Computes the model output for ``x``, the loss against ``targets``, the
    gradients of every Parameter and the optimizer update. The loss must reduce
    to a scalar ("mean" or "sum").

    Parameters
    ----------
    model : Sequential
    loss : SoftmaxCrossEntropy
    optimizer : SGD or Adam
        Updates the model's Parameters.
    x : ndarray of shape (B, n_features)
    targets : ndarray
        Class indices of shape (B,), or probabilities of the logits' shape.
    """
    if loss.reduction == "none":
        raise ValueError(
            "train_step needs a scalar loss: use SoftmaxCrossEntropy(reduction='mean') or 'sum'"
        )

    if not isinstance(targets, np.ndarray):
        targets = np.asarray(targets)
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
