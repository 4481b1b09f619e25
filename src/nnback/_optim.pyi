"""Type stub of the compiled module ``nnback._optim``."""

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

# Cython's fused type ``floating``. All arrays of one call have the same dtype.
_Float = TypeVar("_Float", np.float32, np.float64)

def sgd_update(
    param: NDArray[_Float], grad: NDArray[_Float], lr: float, weight_decay: float
) -> None: ...
def sgd_momentum_update(
    param: NDArray[_Float],
    grad: NDArray[_Float],
    velocity: NDArray[_Float],
    lr: float,
    momentum: float,
    weight_decay: float,
    nesterov: bool,
) -> None: ...
def adam_update(
    param: NDArray[_Float],
    grad: NDArray[_Float],
    exp_avg: NDArray[_Float],
    exp_avg_sq: NDArray[_Float],
    step_size: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    bias_correction2_sqrt: float,
) -> None: ...
