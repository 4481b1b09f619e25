"""Contenders for MLP training: one step at a fixed batch, and one epoch over a data set.

Every contender trains the same architecture (784-256-ReLU-256-ReLU-10 by
default, logits out) with the mean softmax cross-entropy loss and plain SGD
(lr = 0.01, no momentum, no weight decay), in float32. A step is forward,
loss, backward and parameter update.

* nnback: ``mlp``, ``SoftmaxCrossEntropy``, ``SGD`` and ``train_step``.
* reference: the same step written with ``nnback.reference`` functions and a
  NumPy update ``W -= lr * dW``.
* torch: ``torch.nn.Sequential`` of ``Linear`` and ``ReLU``,
  ``torch.nn.CrossEntropyLoss`` and ``torch.optim.SGD``, in the usual loop
  ``zero_grad(set_to_none=True)``, forward, loss, ``backward()``, ``step()``.
* sklearn (epoch only): ``MLPClassifier(solver="sgd", batch_size=128,
  momentum=0, alpha=0, learning_rate="constant", shuffle=False)``. One
  ``partial_fit(X, y)`` call is one pass over the data in mini-batches, so it
  is timed as one epoch. It includes scikit-learn's input validation and
  one-hot encoding of the labels, which run once per call.
"""

import numpy as np

from benchmarks.gemm_floor import CallOverhead, GemmFloor
from benchmarks.harness import Contender

LEARNING_RATE = 0.01


def nnback_model(modules, layer_sizes, seed):
    """Return an nnback MLP, its loss and its SGD optimizer."""
    model = modules.mlp(list(layer_sizes), activation="relu", dtype=np.float32, rng=seed)
    loss = modules.SoftmaxCrossEntropy()
    optimizer = modules.SGD(model.parameters(), lr=LEARNING_RATE)
    return model, loss, optimizer


def nnback_step_function(modules, model, loss, optimizer):
    """Return a function that runs one nnback training step on ``(x, labels)``."""
    train_step = modules.train_step

    def step(x, labels):
        train_step(model, loss, optimizer, x, labels)

    return step


class ReferenceStep:
    """One SGD training step of an MLP written with nnback.reference functions."""

    def __init__(self, reference, layer_sizes, rng):
        self.reference = reference
        self.weights = []
        self.biases = []
        for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:]):
            # He uniform initialization, as nnback.mlp uses for ReLU.
            limit = np.sqrt(6.0 / n_in)
            self.weights.append(rng.uniform(-limit, limit, size=(n_in, n_out)).astype(np.float32))
            self.biases.append(np.zeros(n_out, dtype=np.float32))

    def __call__(self, x, labels):
        reference = self.reference
        n_layers = len(self.weights)

        inputs = [x]
        for layer in range(n_layers):
            output = reference.linear_forward(inputs[-1], self.weights[layer], self.biases[layer])
            if layer < n_layers - 1:
                output = reference.relu_forward(output)
            inputs.append(output)

        _, gradient = reference.softmax_cross_entropy(inputs[-1], labels)

        for layer in reversed(range(n_layers)):
            if layer < n_layers - 1:
                gradient = reference.relu_backward(inputs[layer + 1], gradient)
            gradient_in, weight_gradient, bias_gradient = reference.linear_backward(
                inputs[layer], self.weights[layer], gradient, need_dx=layer > 0
            )
            self.weights[layer] -= LEARNING_RATE * weight_gradient
            self.biases[layer] -= LEARNING_RATE * bias_gradient
            gradient = gradient_in


def torch_step_function(torch, layer_sizes, seed):
    """Return a function that runs one PyTorch training step on ``(x, labels)`` tensors."""
    torch.manual_seed(seed)
    layers = []
    for index, (n_in, n_out) in enumerate(zip(layer_sizes[:-1], layer_sizes[1:])):
        layers.append(torch.nn.Linear(n_in, n_out))
        if index < len(layer_sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).to(torch.float32)
    loss = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)

    def step(x, labels):
        optimizer.zero_grad(set_to_none=True)
        loss(model(x), labels).backward()
        optimizer.step()

    return step


def training_data(n_samples, n_features, n_classes, seed):
    """Return MNIST-shaped random data: float32 pixels in [0, 1) and int64 labels in [0, n_classes)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n_samples, n_features), dtype=np.float32)
    labels = rng.integers(0, n_classes, size=n_samples, dtype=np.int64)
    return x, labels


def step_contenders(modules, batch_size, layer_sizes, seed):
    """Return the training-step contenders, the GEMM floor and its call overhead for one batch size.

    Also returns the floor's verification report.
    """
    rng = np.random.default_rng(seed)
    x, labels = training_data(batch_size, layer_sizes[0], layer_sizes[-1], seed)

    model, loss, optimizer = nnback_model(modules, layer_sizes, seed)
    nnback_step = nnback_step_function(modules, model, loss, optimizer)
    reference_step = ReferenceStep(modules.reference, layer_sizes, rng)

    contenders = [
        Contender("nnback", lambda: nnback_step(x, labels)),
        Contender("reference", lambda: reference_step(x, labels)),
    ]

    torch = modules.torch
    if torch is not None:
        torch_step = torch_step_function(torch, layer_sizes, seed)
        x_tensor, labels_tensor = torch.from_numpy(x), torch.from_numpy(labels)
        contenders.append(Contender("torch", lambda: torch_step(x_tensor, labels_tensor)))

    floor = GemmFloor(batch_size, layer_sizes, rng)
    verification = floor.verify()
    overhead = CallOverhead(floor)
    contenders.append(Contender("gemm floor", floor.run))
    contenders.append(Contender("sgemm call overhead", overhead.run))
    return contenders, verification


def _batch_slices(n_samples, batch_size):
    return [slice(start, min(start + batch_size, n_samples)) for start in range(0, n_samples, batch_size)]


def epoch_contenders(modules, x, labels, batch_size, layer_sizes, seed):
    """Return contenders that each run one epoch over ``(x, labels)`` in order, without shuffling.

    Each contender's model is initialized and warmed up (a few batches of
    both batch sizes that occur, the full one and the last partial one)
    before it is returned, so the harness can skip its own warm-up.
    """
    slices = _batch_slices(len(x), batch_size)
    warmup_slices = slices[:3] + slices[-1:]
    contenders = []

    model, loss, optimizer = nnback_model(modules, layer_sizes, seed)
    nnback_step = nnback_step_function(modules, model, loss, optimizer)

    def run_nnback(batches=slices):
        for batch in batches:
            nnback_step(x[batch], labels[batch])

    run_nnback(warmup_slices)
    contenders.append(Contender("nnback", run_nnback, inner=1))

    torch = modules.torch
    if torch is not None:
        torch_step = torch_step_function(torch, layer_sizes, seed)
        x_tensor, labels_tensor = torch.from_numpy(x), torch.from_numpy(labels)

        def run_torch(batches=slices):
            for batch in batches:
                torch_step(x_tensor[batch], labels_tensor[batch])

        run_torch(warmup_slices)
        contenders.append(Contender("torch", run_torch, inner=1))

    sklearn_mlp = modules.sklearn_mlp
    if sklearn_mlp is not None:
        classifier = sklearn_mlp(
            hidden_layer_sizes=tuple(layer_sizes[1:-1]),
            activation="relu",
            solver="sgd",
            alpha=0.0,
            batch_size=batch_size,
            learning_rate="constant",
            learning_rate_init=LEARNING_RATE,
            momentum=0.0,
            nesterovs_momentum=False,
            shuffle=False,
            random_state=seed,
        )
        classes = np.arange(layer_sizes[-1])
        warmup_rows = min(len(x), 3 * batch_size)
        classifier.partial_fit(x[:warmup_rows], labels[:warmup_rows], classes=classes)

        def run_sklearn():
            classifier.partial_fit(x, labels)

        contenders.append(Contender("sklearn", run_sklearn, inner=1))
    return contenders

