"""Type stub of the compiled module ``nnback._linear``."""

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

# Cython's fused type ``floating``. All arrays of one call have the same dtype.
_Float = TypeVar("_Float", np.float32, np.float64)

def forward(
    x: NDArray[_Float],
    weight: NDArray[_Float],
    bias: NDArray[_Float] | None,
    y: NDArray[_Float],
) -> None: ...
def backward(
    x: NDArray[_Float],
    weight: NDArray[_Float],
    dy: NDArray[_Float],
    dx: NDArray[_Float] | None,
    dweight: NDArray[_Float],
    dbias: NDArray[_Float] | None,
) -> None: ...
