"""Self-test of the compiled kernels on the machine that runs them.

``python -m nnback check`` calls :func:`run`. It prints the BLAS and OpenMP
libraries loaded in the process, with their versions, CPU architectures and
thread counts. Then it compares every compiled operation with
``nnback.reference`` on a small grid of shapes in float32 and float64. It also
checks the backward passes against central finite differences in float64, and
one fused training step against the same step written with the reference
functions.

BLAS builds differ between machines in their kernels and summation order, so
the comparisons use normwise error bounds rather than exact equality: the
maximum absolute difference divided by the maximum absolute reference value.
"""

import numbers
import platform
import sys
from dataclasses import dataclass

import numpy as np
import scipy
from threadpoolctl import threadpool_info

from nnback import _blas, functional, reference
from nnback.layers import SoftmaxCrossEntropy, mlp
from nnback.optim import SGD
from nnback.training import train_step

# Normwise error limits of compiled against reference results. A float32 dot
# product of length k has an error bound of about k * 2**-24 relative to the
# sum of absolute products. The grid's largest k is 300, which gives about
# 2e-5 in the worst case and about 1e-6 with random signs. The float64 limit
# is the same number of units in the last place.
PARITY_LIMITS = {np.float32: 1e-5, np.float64: 2e-14}

# Central differences with step h have a truncation error of order h**2 and a
# rounding error of order 1e-16 / h, so h = 1e-6 balances them near 1e-10.
FINITE_DIFFERENCE_STEP = 1e-6
FINITE_DIFFERENCE_LIMIT = 1e-6

DTYPES = (np.float32, np.float64)

# (B, n_features, n_outputs) for the linear layer, including empty sizes.
LINEAR_SHAPES = ((1, 1, 1), (3, 5, 2), (17, 33, 9), (64, 300, 10), (0, 4, 3), (5, 0, 3))

# Shapes for the element-wise activations and for the logits (B, C).
ELEMENTWISE_SHAPES = ((0,), (1,), (7,), (33, 65), (1000,))
LOGIT_SHAPES = ((1, 1), (5, 3), (64, 10), (16, 1000), (0, 4))

ACTIVATIONS = ("sigmoid", "tanh", "relu")


@dataclass
class Result:
    """The outcome of one named check: the largest error seen and its limit.

    Parameters
    ----------
    name : str
        What was checked, with the dtype.
    error : float
        The largest normwise error over the check's comparisons.
    limit : float
        The largest error that passes.
    cases : int
        The number of comparisons.
    """

    name: str
    error: float
    limit: float
    cases: int

    @property
    def passed(self):
        """Whether ``error <= limit``. A NaN error fails."""
        return self.error <= self.limit


def normwise_error(actual, expected, scale=0.0):
    """Return ``max|actual - expected| / max|expected|`` over the finite entries of ``expected``.

    Parameters
    ----------
    actual, expected : array_like
        Arrays of the same shape. ``expected`` is the trusted value.
    scale : float, default 0.0
        A lower bound of the denominator, for results that can cancel to
        nearly zero although their inputs are of order ``scale``.

    Returns
    -------
    float
        0.0 for empty or equal arrays. Infinite if the shapes differ, if NaN or
        infinity in one array is not matched by the same value in the other,
        or if ``expected`` is all zeros and ``actual`` is not.

    Examples
    --------
    >>> normwise_error([1.0, 2.0], [1.0, 2.5])
    0.2
    >>> normwise_error([float("nan"), 1.0], [0.0, 1.0])
    inf
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return float("inf")
    if actual.size == 0:
        return 0.0

    finite = np.isfinite(expected)
    same_nonfinite = (np.isnan(actual) & np.isnan(expected)) | (actual == expected)
    if not np.all(np.where(finite, np.isfinite(actual), same_nonfinite)):
        return float("inf")

    difference = np.max(np.abs(actual[finite] - expected[finite]), initial=0.0)
    scale = max(np.max(np.abs(expected[finite]), initial=0.0), scale)
    if difference == 0.0:
        return 0.0
    return float(difference / scale) if scale > 0 else float("inf")


# ---------------------------------------------------------------------------
# Parity of compiled and reference results
# ---------------------------------------------------------------------------


def _linear_parity(rng, dtype):
    errors = []
    for batch, n_features, n_outputs in LINEAR_SHAPES:
        x = rng.standard_normal((batch, n_features)).astype(dtype)
        weight = rng.standard_normal((n_features, n_outputs)).astype(dtype)
        bias = rng.standard_normal(n_outputs).astype(dtype)
        dy = rng.standard_normal((batch, n_outputs)).astype(dtype)

        errors.append(normwise_error(
            functional.linear_forward(x, weight, bias),
            reference.linear_forward(x, weight, bias),
        ))
        for actual, expected in zip(
            functional.linear_backward(x, weight, dy),
            reference.linear_backward(x, weight, dy),
        ):
            errors.append(normwise_error(actual, expected))
    return errors


def _activation_parity(rng, dtype, name):
    errors = []
    for shape in ELEMENTWISE_SHAPES:
        # A spread of magnitudes reaches the saturated tails of sigmoid and tanh.
        x = (rng.standard_normal(shape) * 8).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)

        y = getattr(functional, f"{name}_forward")(x)
        errors.append(normwise_error(y, getattr(reference, f"{name}_forward")(x)))
        # In the saturated tails dy * (1 - y**2) and dy * y * (1 - y) cancel to
        # almost zero, and two roundings of the same formula differ in their
        # last digits. Both are exact to a few units of max|dy|, which is
        # therefore the scale: a single saturated entry would otherwise fail
        # the check for some seeds.
        errors.append(normwise_error(
            getattr(functional, f"{name}_backward")(y, dy),
            getattr(reference, f"{name}_backward")(y, dy),
            scale=float(np.max(np.abs(dy), initial=0.0)),
        ))
    return errors


def _softmax_parity(rng, dtype):
    errors = []
    for batch, n_classes in LOGIT_SHAPES:
        z = (rng.standard_normal((batch, n_classes)) * 4).astype(dtype)
        labels = rng.integers(0, n_classes, size=batch)
        probabilities = reference.softmax(rng.standard_normal((batch, n_classes)).astype(dtype))

        errors.append(normwise_error(functional.softmax(z), reference.softmax(z)))
        errors.append(normwise_error(functional.log_softmax(z), reference.log_softmax(z)))
        for targets in (labels, probabilities):
            for reduction in ("mean", "sum", "none"):
                actual = functional.softmax_cross_entropy(z, targets, reduction=reduction)
                expected = reference.softmax_cross_entropy(z, targets, reduction=reduction)
                errors.append(normwise_error(actual[0], expected[0]))
                errors.append(normwise_error(actual[1], expected[1]))
    return errors


def _gemm_parity(rng, dtype):
    # The four transpose combinations of the row-major BLAS bridge, against
    # NumPy's product in float64.
    errors = []
    m, n, k = 13, 7, 29
    for trans_a in (False, True):
        for trans_b in (False, True):
            a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
            b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
            c = rng.standard_normal((m, n)).astype(dtype)
            op_a = a.T if trans_a else a
            op_b = b.T if trans_b else b
            expected = 0.5 * (op_a.astype(np.float64) @ op_b.astype(np.float64)) + 2.0 * c

            _blas.gemm_for_tests(trans_a, trans_b, 0.5, a, b, 2.0, c)
            errors.append(normwise_error(c, expected))
    return errors


def _exact_gemm_error(rng, dtype):
    """Return the largest difference of a gemm on small integers from the exact product.

    Products and sums of integers below 2**24 are exact in float32 and float64
    in any summation order, so every BLAS must return the exact result. NumPy's
    integer product, which does not use BLAS, gives the expected values.
    """
    worst = 0.0
    m, n, k = 9, 11, 64
    for trans_a in (False, True):
        for trans_b in (False, True):
            a = rng.integers(-8, 9, size=(k, m) if trans_a else (m, k))
            b = rng.integers(-8, 9, size=(n, k) if trans_b else (k, n))
            op_a = a.T if trans_a else a
            op_b = b.T if trans_b else b
            expected = op_a @ op_b
            c = np.full((m, n), np.nan, dtype=dtype)

            _blas.gemm_for_tests(trans_a, trans_b, 1.0, a.astype(dtype), b.astype(dtype), 0.0, c)
            worst = max(worst, float(np.max(np.abs(c - expected))))
    return worst


# ---------------------------------------------------------------------------
# Gradients against finite differences (float64)
# ---------------------------------------------------------------------------


def _finite_difference_gradient(function, array):
    """Return the central-difference gradient of the scalar ``function()`` with respect to ``array``.

    ``array`` is perturbed in place, one element at a time, and restored.
    """
    gradient = np.empty_like(array)
    flat = array.reshape(-1)
    flat_gradient = gradient.reshape(-1)
    for index in range(flat.size):
        saved = flat[index]
        flat[index] = saved + FINITE_DIFFERENCE_STEP
        upper = function()
        flat[index] = saved - FINITE_DIFFERENCE_STEP
        lower = function()
        flat[index] = saved
        flat_gradient[index] = (upper - lower) / (2 * FINITE_DIFFERENCE_STEP)
    return gradient


def _gradient_errors(rng):
    errors = {}

    # The scalar sum(r * y) has dL/dy = r, a random projection of the output.
    x = rng.standard_normal((4, 6))
    weight = rng.standard_normal((6, 3))
    bias = rng.standard_normal(3)
    projection = rng.standard_normal((4, 3))

    def linear_loss():
        return float(np.sum(projection * functional.linear_forward(x, weight, bias)))

    dx, dweight, dbias = functional.linear_backward(x, weight, projection)
    errors["linear_backward"] = max(
        normwise_error(dx, _finite_difference_gradient(linear_loss, x)),
        normwise_error(dweight, _finite_difference_gradient(linear_loss, weight)),
        normwise_error(dbias, _finite_difference_gradient(linear_loss, bias)),
    )

    for name in ACTIVATIONS:
        forward = getattr(functional, f"{name}_forward")
        backward = getattr(functional, f"{name}_backward")
        # ReLU has no derivative at 0, so these inputs stay well away from it.
        inputs = rng.uniform(0.1, 2.0, size=(3, 5)) * rng.choice([-1.0, 1.0], size=(3, 5))
        upstream = rng.standard_normal((3, 5))

        def activation_loss(forward=forward, inputs=inputs, upstream=upstream):
            return float(np.sum(upstream * forward(inputs)))

        analytic = backward(forward(inputs), upstream)
        numeric = _finite_difference_gradient(activation_loss, inputs)
        errors[f"{name}_backward"] = normwise_error(analytic, numeric)

    z = rng.standard_normal((5, 4))
    labels = rng.integers(0, 4, size=5)
    probabilities = reference.softmax(rng.standard_normal((5, 4)))
    worst = 0.0
    for targets in (labels, probabilities):
        for reduction in ("mean", "sum"):
            def loss(targets=targets, reduction=reduction):
                return functional.softmax_cross_entropy(z, targets, reduction=reduction)[0]

            analytic = functional.softmax_cross_entropy(z, targets, reduction=reduction)[1]
            worst = max(worst, normwise_error(analytic, _finite_difference_gradient(loss, z)))
    errors["softmax_cross_entropy gradient"] = worst
    return errors


# ---------------------------------------------------------------------------
# One fused training step against the reference
# ---------------------------------------------------------------------------


def _training_step_error(rng, dtype):
    """Return the normwise error of one compiled SGD step against the reference step."""
    sizes = (12, 16, 8, 5)
    model = mlp(sizes, activation="tanh", dtype=dtype, rng=int(rng.integers(2**31)))
    x = rng.standard_normal((9, sizes[0])).astype(dtype)
    labels = rng.integers(0, sizes[-1], size=9)
    learning_rate, weight_decay = 0.1, 0.01
    weights = [layer.weight.data.copy() for layer in model.layers[::2]]
    biases = [layer.bias.data.copy() for layer in model.layers[::2]]

    activations = [x]
    for index, (weight, bias) in enumerate(zip(weights, biases)):
        y = reference.linear_forward(activations[-1], weight, bias)
        if index < len(weights) - 1:
            y = reference.tanh_forward(y)
        activations.append(y)
    expected_loss, dy = reference.softmax_cross_entropy(activations[-1], labels)
    expected_weights = []
    for index in reversed(range(len(weights))):
        if index < len(weights) - 1:
            dy = reference.tanh_backward(activations[index + 1], dy)
        dx, dweight, dbias = reference.linear_backward(activations[index], weights[index], dy)
        expected_weights.append(weights[index] - learning_rate * (dweight + weight_decay * weights[index]))
        expected_weights.append(biases[index] - learning_rate * (dbias + weight_decay * biases[index]))
        dy = dx

    optimizer = SGD(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    loss = train_step(model, SoftmaxCrossEntropy(), optimizer, x, labels)
    actual_weights = []
    for layer in reversed(model.layers[::2]):
        actual_weights.extend([layer.weight.data, layer.bias.data])

    errors = [normwise_error(loss, expected_loss)]
    errors.extend(normwise_error(a, e) for a, e in zip(actual_weights, expected_weights))
    return max(errors), len(errors)


# ---------------------------------------------------------------------------
# Running the checks and reporting
# ---------------------------------------------------------------------------


def _check_seed(seed):
    # numpy.random.default_rng accepts any int >= 0, also beyond 64 bits, but its
    # own error for other values does not name the argument.
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")


def run_checks(seed=0):
    """Run every check.

    Parameters
    ----------
    seed : int, default 0
        Seed of the random inputs, >= 0.

    Returns
    -------
    list of Result
        One entry per operation group and dtype, in the order they ran.

    Raises
    ------
    ValueError
        If ``seed`` is not an int >= 0.
    """
    _check_seed(seed)
    rng = np.random.default_rng(seed)
    results = []

    for dtype in DTYPES:
        limit = PARITY_LIMITS[dtype]
        dtype_name = np.dtype(dtype).name
        groups = {
            "gemm (4 transpose cases)": _gemm_parity(rng, dtype),
            "linear forward and backward": _linear_parity(rng, dtype),
            "softmax, log-softmax, cross-entropy": _softmax_parity(rng, dtype),
        }
        for name in ACTIVATIONS:
            groups[f"{name} forward and backward"] = _activation_parity(rng, dtype, name)
        for name, errors in groups.items():
            results.append(Result(f"{name}, {dtype_name}", max(errors), limit, len(errors)))

        results.append(Result(f"gemm on small integers (exact), {dtype_name}", _exact_gemm_error(rng, dtype), 0.0, 4))

        error, cases = _training_step_error(rng, dtype)
        results.append(Result(f"fused SGD training step, {dtype_name}", error, limit, cases))

    for name, error in _gradient_errors(rng).items():
        results.append(Result(f"{name} vs finite differences, float64", error, FINITE_DIFFERENCE_LIMIT, 1))
    return results


def describe_libraries():
    """Describe the BLAS and OpenMP libraries loaded in the process.

    SciPy's BLAS runs nnback's matrix products. Importing nnback loads it, and
    NumPy loads its own copy.

    Returns
    -------
    list of str
        One entry per library, as threadpoolctl reports it: the API, version,
        which package loaded it, CPU architecture, threading layer, thread
        count and the path of the shared library.
    """
    lines = []
    for pool in threadpool_info():
        path = pool.get("filepath", "")
        if "scipy" in path and "numpy" not in path:
            owner = "SciPy's, used by nnback"
        elif "numpy" in path:
            owner = "NumPy's"
        else:
            owner = "loaded by another library"
        details = [
            f"{key.replace('_', ' ')} {pool[key]}"
            for key in ("architecture", "threading_layer")
            if pool.get(key) not in (None, "", "unknown")
        ]
        details.append(f"thread count {pool.get('num_threads', '?')}")
        lines.append(
            f"  {pool.get('internal_api', '?')} {pool.get('version') or ''} ({owner}): "
            f"{', '.join(details)}\n    {path}"
        )
    return lines


def run(stream=None, verbose=False, seed=0):
    """Print the library report and the check results, and return True if all checks passed.

    Parameters
    ----------
    stream : text stream, default sys.stdout
    verbose : bool, default False
        Print every check. By default only failed checks and a summary are printed.
    seed : int, default 0
        Seed of the random inputs, >= 0.

    Returns
    -------
    bool
        True if every check passed.

    Raises
    ------
    ValueError
        If ``seed`` is not an int >= 0, before anything is printed.
    """
    from nnback import __version__

    _check_seed(seed)
    stream = sys.stdout if stream is None else stream
    print(
        f"nnback {__version__}, Python {platform.python_version()}, NumPy {np.__version__}, "
        f"SciPy {scipy.__version__}, {platform.system()} {platform.machine()}",
        file=stream,
    )
    build = "debug (bounds checks on)" if _blas.DEBUG_BUILD else "optimized"
    print(f"compiled kernels: {build} build", file=stream)
    print("BLAS and OpenMP libraries loaded:", file=stream)
    for line in describe_libraries() or ["  none found by threadpoolctl"]:
        print(line, file=stream)

    results = run_checks(seed)

    failures = [result for result in results if not result.passed]
    if verbose or failures:
        print("checks (normwise error / limit):", file=stream)
    for result in results:
        if verbose or not result.passed:
            status = "ok" if result.passed else "FAILED"
            print(
                f"  {status:6} {result.name}: {result.error:.2e} / {result.limit:.0e} "
                f"({result.cases} comparisons)",
                file=stream,
            )
    cases = sum(result.cases for result in results)
    if failures:
        print(f"{len(failures)} of {len(results)} checks FAILED", file=stream)
        return False
    print(f"all {len(results)} checks passed ({cases} comparisons)", file=stream)
    return True
