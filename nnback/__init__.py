"""nnback: fast CPU forward and backward passes for neural networks."""

__version__ = "0.1.0"
