"""Compiled parameter updates for ``nnback.optim``.

Every function updates a flat, C-contiguous parameter buffer in place from its
gradient, and never writes the gradient. ``param``, ``grad`` and the state
buffers share one dtype (float32 or float64) and one length, which the Python
tier checks. The arithmetic runs in that dtype with the GIL released, and an
empty buffer is a no-op.

In each formula, ``g`` is the gradient with weight decay (L2) added:
``g = grad + weight_decay * param``. The addition is skipped when
``weight_decay == 0`` so that an infinite parameter does not turn into NaN.

SGD with momentum ``mu`` keeps the velocity ``v`` (zero before the first step)::

    v = mu * v + g
    param -= lr * (g + mu * v)      if nesterov
    param -= lr * v                 otherwise

Adam keeps the first and second moments ``m`` and ``s`` (zero before the first
step) and updates, at step ``t = 1, 2, ...``::

    m = m + (1 - beta1) * (g - m)         (equal to beta1 * m + (1 - beta1) * g)
    s = beta2 * s + (1 - beta2) * g * g
    param -= step_size * m / (sqrt(s) / bias_correction2_sqrt + eps)

where the caller passes ``step_size = lr / (1 - beta1**t)`` and
``bias_correction2_sqrt = sqrt(1 - beta2**t)``.
"""

from cython cimport floating
from libc.math cimport sqrt, sqrtf


def sgd_update(floating[::1] param, const floating[::1] grad,
               double lr, double weight_decay):
    """Apply ``param -= lr * (grad + weight_decay * param)`` in place."""
    cdef Py_ssize_t i
    cdef Py_ssize_t n = param.shape[0]
    cdef floating rate = <floating> lr
    cdef floating decay = <floating> weight_decay
    cdef floating g

    with nogil:
        for i in range(n):
            g = grad[i]
            if decay != 0:
                g = g + decay * param[i]
            param[i] = param[i] - rate * g


def sgd_momentum_update(floating[::1] param, const floating[::1] grad,
                        floating[::1] velocity, double lr, double momentum,
                        double weight_decay, bint nesterov):
    """Apply one SGD step with (Nesterov) momentum, updating ``velocity`` in place."""
    cdef Py_ssize_t i
    cdef Py_ssize_t n = param.shape[0]
    cdef floating rate = <floating> lr
    cdef floating mu = <floating> momentum
    cdef floating decay = <floating> weight_decay
    cdef floating g, v

    with nogil:
        for i in range(n):
            g = grad[i]
            if decay != 0:
                g = g + decay * param[i]
            v = mu * velocity[i] + g
            velocity[i] = v
            if nesterov:
                # Nesterov's look-ahead: step along the gradient plus the
                # momentum term of the updated velocity.
                param[i] = param[i] - rate * (g + mu * v)
            else:
                param[i] = param[i] - rate * v


def adam_update(floating[::1] param, const floating[::1] grad,
                floating[::1] exp_avg, floating[::1] exp_avg_sq,
                double step_size, double beta1, double beta2, double eps,
                double weight_decay, double bias_correction2_sqrt):
    """Apply one Adam step, updating the moments ``exp_avg`` and ``exp_avg_sq`` in place."""
    cdef Py_ssize_t i
    cdef Py_ssize_t n = param.shape[0]
    cdef floating rate = <floating> step_size
    cdef floating one_minus_beta1 = <floating> (1.0 - beta1)
    cdef floating b2 = <floating> beta2
    cdef floating one_minus_beta2 = <floating> (1.0 - beta2)
    cdef floating epsilon = <floating> eps
    cdef floating decay = <floating> weight_decay
    cdef floating correction2 = <floating> bias_correction2_sqrt
    cdef floating g, m, s, root

    with nogil:
        for i in range(n):
            g = grad[i]
            if decay != 0:
                g = g + decay * param[i]
            m = exp_avg[i] + one_minus_beta1 * (g - exp_avg[i])
            s = b2 * exp_avg_sq[i] + one_minus_beta2 * g * g
            exp_avg[i] = m
            exp_avg_sq[i] = s
            if floating is float:
                root = sqrtf(s)
            else:
                root = sqrt(s)
            param[i] = param[i] - rate * (m / (root / correction2 + epsilon))
