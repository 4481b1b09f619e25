"""nnback: fast CPU forward and backward passes for neural networks.

The compiled entry points live in ``nnback.functional`` and their NumPy
counterparts in ``nnback.reference``. The classes below build training on top
of them. ``MLPClassifier`` needs scikit-learn and is imported on first use.
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
from nnback.training import train_step

__version__ = "0.1.0"

__all__ = [
    "Adam",
    "Linear",
    "MLPClassifier",
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
        from nnback.estimator import MLPClassifier

        return MLPClassifier
    raise AttributeError(f"module 'nnback' has no attribute {name!r}")
