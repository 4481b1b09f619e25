"""Type stub of the compiled module ``nnback._softmax``."""

from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

# Cython's fused type ``floating``. All arrays of one call have the same dtype.
_Float = TypeVar("_Float", np.float32, np.float64)

def softmax(z: NDArray[_Float], p: NDArray[_Float]) -> None: ...
def log_softmax(z: NDArray[_Float], log_p: NDArray[_Float]) -> None: ...
def cross_entropy_labels(
    z: NDArray[_Float],
    labels: NDArray[np.intp],
    gradient_scale: float,
    dz: NDArray[_Float],
    row_loss: NDArray[_Float] | None,
) -> float: ...
def cross_entropy_probabilities(
    z: NDArray[_Float],
    targets: NDArray[_Float],
    gradient_scale: float,
    dz: NDArray[_Float],
    row_loss: NDArray[_Float] | None,
) -> float: ...

# labels may have any of the eight integer dtypes of 8 to 64 bits.
def first_invalid_label(labels: NDArray[np.integer[Any]], n_classes: int) -> int: ...
