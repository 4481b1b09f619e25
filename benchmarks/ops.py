"""Contenders for single operations, forward and backward: linear, activations, softmax cross-entropy.

nnback's compiled functions write into preallocated outputs wherever the
functional API takes ``out=``. PyTorch runs eagerly on tensors that share
memory with the NumPy arrays (``torch.from_numpy``): the linear layer and the
loss through autograd, the activations through the ATen out-variants that
autograd itself calls, so they too write into preallocated outputs.
"""

import math

import numpy as np

from benchmarks.harness import Contender

ACTIVATIONS = ("sigmoid", "tanh", "relu")


def linear_contenders(modules, batch_size, n_features, n_outputs, rng):
    """Return contenders that run ``y = x @ W + b`` and its full backward pass (dx, dW, db)."""
    functional = modules.functional
    reference = modules.reference
    x = rng.standard_normal((batch_size, n_features), dtype=np.float32)
    weight = rng.standard_normal((n_features, n_outputs), dtype=np.float32) / math.sqrt(n_features)
    bias = rng.standard_normal(n_outputs, dtype=np.float32)
    dy = rng.standard_normal((batch_size, n_outputs), dtype=np.float32)
    y = np.empty((batch_size, n_outputs), dtype=np.float32)

    def run_nnback():
        functional.linear_forward(x, weight, bias, out=y)
        functional.linear_backward(x, weight, dy)

    def run_reference():
        reference.linear_forward(x, weight, bias, out=y)
        reference.linear_backward(x, weight, dy)

    contenders = [Contender("nnback", run_nnback), Contender("reference", run_reference)]

    torch = modules.torch
    if torch is not None:
        x_tensor = torch.from_numpy(x).requires_grad_()
        # PyTorch stores the weight as (n_outputs, n_features).
        weight_tensor = torch.from_numpy(np.ascontiguousarray(weight.T)).requires_grad_()
        bias_tensor = torch.from_numpy(bias).requires_grad_()
        dy_tensor = torch.from_numpy(dy)

        def run_torch():
            output = torch.nn.functional.linear(x_tensor, weight_tensor, bias_tensor)
            output.backward(dy_tensor)
            x_tensor.grad = None
            weight_tensor.grad = None
            bias_tensor.grad = None

        contenders.append(Contender("torch", run_torch))
    return contenders


def _torch_activation(torch, name):
    aten = torch.ops.aten
    if name == "sigmoid":
        def forward(x, y):
            torch.sigmoid(x, out=y)

        def backward(y, dy, dx):
            aten.sigmoid_backward.grad_input(dy, y, grad_input=dx)
    elif name == "tanh":
        def forward(x, y):
            torch.tanh(x, out=y)

        def backward(y, dy, dx):
            aten.tanh_backward.grad_input(dy, y, grad_input=dx)
    else:
        # torch.relu takes no out=, but clamp_min(x, 0) computes the same values.
        def forward(x, y):
            torch.clamp_min(x, 0.0, out=y)

        def backward(y, dy, dx):
            aten.threshold_backward.grad_input(dy, y, 0.0, grad_input=dx)
    return forward, backward


def activation_contenders(modules, name, n_elements, rng):
    """Return contenders for one activation's forward and backward pass, plus a NumPy copy.

    The copy (``np.copyto`` of the input into a preallocated array) reads and
    writes one array each, so it is the memory-bandwidth yardstick.
    """
    functional = modules.functional
    reference = modules.reference
    shape = (n_elements // 4096, 4096) if n_elements % 4096 == 0 else (n_elements,)
    x = rng.standard_normal(shape, dtype=np.float32)
    dy = rng.standard_normal(shape, dtype=np.float32)
    y = np.empty(shape, dtype=np.float32)
    dx = np.empty(shape, dtype=np.float32)
    copy_target = np.empty(shape, dtype=np.float32)

    nnback_forward = getattr(functional, f"{name}_forward")
    nnback_backward = getattr(functional, f"{name}_backward")
    reference_forward = getattr(reference, f"{name}_forward")
    reference_backward = getattr(reference, f"{name}_backward")

    def run_nnback():
        nnback_forward(x, out=y)
        nnback_backward(y, dy, out=dx)

    def run_reference():
        reference_forward(x, out=y)
        reference_backward(y, dy, out=dx)

    def run_copy():
        np.copyto(copy_target, x)

    contenders = [
        Contender("nnback", run_nnback),
        Contender("reference", run_reference),
    ]

    torch = modules.torch
    if torch is not None:
        torch_forward, torch_backward = _torch_activation(torch, name)
        x_tensor, dy_tensor = torch.from_numpy(x), torch.from_numpy(dy)
        y_tensor, dx_tensor = torch.from_numpy(y), torch.from_numpy(dx)

        def run_torch():
            torch_forward(x_tensor, y_tensor)
            torch_backward(y_tensor, dy_tensor, dx_tensor)

        contenders.append(Contender("torch", run_torch))

    contenders.append(Contender("numpy copy", run_copy))
    return contenders


def softmax_cross_entropy_contenders(modules, batch_size, n_classes, rng):
    """Return contenders for the mean softmax cross-entropy loss and its gradient on class labels."""
    functional = modules.functional
    reference = modules.reference
    logits = rng.standard_normal((batch_size, n_classes), dtype=np.float32)
    labels = rng.integers(0, n_classes, size=batch_size, dtype=np.int64)

    def run_nnback():
        functional.softmax_cross_entropy(logits, labels)

    def run_reference():
        reference.softmax_cross_entropy(logits, labels)

    contenders = [Contender("nnback", run_nnback), Contender("reference", run_reference)]

    torch = modules.torch
    if torch is not None:
        logits_tensor = torch.from_numpy(logits).requires_grad_()
        labels_tensor = torch.from_numpy(labels)

        def run_torch():
            loss = torch.nn.functional.cross_entropy(logits_tensor, labels_tensor)
            loss.backward()
            logits_tensor.grad = None

        contenders.append(Contender("torch", run_torch))
    return contenders
