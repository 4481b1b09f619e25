"""Type stub of the compiled module ``nnback._network``."""

from enum import IntEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray
from typing_extensions import Self, disjoint_base

from nnback.layers import Parameter

class Activation(IntEnum):
    IDENTITY = 0
    RELU = 1
    SIGMOID = 2
    TANH = 3

# The arguments go to __new__ because the compiled class takes them in __cinit__.
@disjoint_base
class DenseChain:
    def __new__(
        cls, weights: list[Parameter], biases: list[Parameter | None], activations: list[int]
    ) -> Self: ...
    @property
    def weights(self) -> list[Parameter]: ...
    @property
    def biases(self) -> list[Parameter | None]: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    def train_step(
        self,
        x: NDArray[np.float32] | NDArray[np.float64],
        labels: NDArray[np.intp],
        fused_sgd: bool,
        learning_rate: float = 0.0,
        weight_decay: float = 0.0,
        mean: bool = True,
    ) -> float: ...
