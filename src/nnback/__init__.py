"""nnback: fast CPU forward and backward passes for neural networks.

The compiled entry points live in ``nnback.functional`` and their NumPy
counterparts in ``nnback.reference``. The classes below build training on top
of them. ``MLPClassifier`` needs scikit-learn and is imported on first use.

Examples
--------
Train a two-layer network on class indices and predict:

>>> import numpy as np
>>> import nnback
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(64, 4)).astype(np.float32)     # (n_samples, n_features)
>>> y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)         # (n_samples,)
>>> model = nnback.mlp([4, 16, 2], rng=0)
>>> loss = nnback.SoftmaxCrossEntropy()
>>> optimizer = nnback.Adam(model.parameters(), lr=0.01)
>>> for epoch in range(100):
...     value = nnback.train_step(model, loss, optimizer, x, y)
>>> accuracy = np.mean(model.predict(x).argmax(axis=1) == y)
>>> bool(accuracy > 0.9)
True
"""

from nnback import functional, reference
from nnback.layers import (
    Linear,
    Parameter,
    ReLU,
    Sequential,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
    mlp,
)
from nnback.optim import SGD, Adam
from nnback.parallelism import set_num_threads, threads
from nnback.serialization import load
from nnback.training import NonFiniteLossError, train_step

__version__ = "0.1.0"

__all__ = [
    "Adam",
    "Linear",
    "MLPClassifier",
    "NonFiniteLossError",
    "Parameter",
    "ReLU",
    "SGD",
    "Sequential",
    "Sigmoid",
    "SoftmaxCrossEntropy",
    "Tanh",
    "functional",
    "load",
    "mlp",
    "reference",
    "set_num_threads",
    "threads",
    "train_step",
]


def __getattr__(name):
    # The estimator imports scikit-learn, an optional dependency.
    if name == "MLPClassifier":
        try:
            import sklearn  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "nnback.MLPClassifier needs scikit-learn, which is not installed: "
                "pip install scikit-learn"
            ) from exc
        from nnback.estimator import MLPClassifier

        return MLPClassifier
    raise AttributeError(f"module 'nnback' has no attribute {name!r}")
