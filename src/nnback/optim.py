r"""Stochastic gradient descent and Adam over :class:`nnback.layers.Parameter`.

Both optimizers update ``param.data`` in place with compiled loops
(``nnback._optim``) in the parameter's own dtype, never modify ``param.grad``,
and keep their state between calls to ``step()``. Weight decay is the L2 form
of ``torch.optim.SGD`` and ``torch.optim.Adam``: ``weight_decay * param`` is
added to the gradient before the update, ``g = grad + weight_decay * param``.

SGD with learning rate ``lr`` and momentum ``mu`` (``torch.optim.SGD`` with
``dampening=0``), with the velocity ``v`` starting at zero::

    v     = mu * v + g
    param = param - lr * (g + mu * v)      nesterov=True
    param = param - lr * v                 nesterov=False (param - lr * g if mu == 0)

Adam (``torch.optim.Adam`` without amsgrad), at step ``t = 1, 2, ...``, with
the moments ``m`` and ``s`` starting at zero::

    m     = beta1 * m + (1 - beta1) * g
    s     = beta2 * s + (1 - beta2) * g * g
    param = param - lr / (1 - beta1**t) * m / (sqrt(s) / sqrt(1 - beta2**t) + eps)
"""

import math
import numbers

import numpy as np

from nnback import _optim
from nnback._concurrency import UseGuard, exclusive
from nnback.layers import Parameter

__all__ = ["Optimizer", "SGD", "Adam"]


def _check_hyperparameter(name, value, *, minimum=None, below=None, above=None):
    """Return ``value`` as a float after checking that it is a finite real number in range.

    ``minimum`` is an inclusive lower bound, ``above`` an exclusive lower bound and
    ``below`` an exclusive upper bound. The ValueError names the argument and value.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")

    conditions = []
    if minimum is not None:
        conditions.append((number >= minimum, f">= {minimum}"))
    if above is not None:
        conditions.append((number > above, f"> {above}"))
    if below is not None:
        conditions.append((number < below, f"< {below}"))
    if not all(satisfied for satisfied, _ in conditions):
        expected = " and ".join(text for _, text in conditions)
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return number


class Optimizer:
    """Base class: a list of Parameters, ``zero_grad()`` and the ``step()`` contract.

    Parameters
    ----------
    params : iterable of Parameter
        Must be non-empty and contain each Parameter once, because a repeated
        Parameter would be updated twice per step.

    Attributes
    ----------
    params : tuple of Parameter
        The Parameters in the order given. Read-only, because the optimizer
        state has one buffer of the same shape per Parameter.

    Raises
    ------
    TypeError
        If ``params`` is a single Parameter or contains something else than a
        Parameter.
    ValueError
        If ``params`` is empty or lists a Parameter twice.

    Notes
    -----
    ``step`` of SGD and Adam raises RuntimeError if another thread is inside
    ``step`` of the same optimizer, or inside ``nnback.train_step`` with it.
    Give each thread its own optimizer, built from its own model's parameters.
    """

    def __init__(self, params):
        if isinstance(params, Parameter):
            raise TypeError(
                "params must be an iterable of Parameter, got a single Parameter: "
                "pass [param] or model.parameters()"
            )
        try:
            params = tuple(params)
        except TypeError:
            hint = "model.parameters()" if callable(getattr(params, "parameters", None)) else "[param]"
            raise TypeError(
                f"params must be an iterable of Parameter, got {type(params).__name__}: "
                f"pass {hint}"
            ) from None
        if not params:
            raise ValueError("params is empty: the optimizer needs at least one Parameter")

        seen: dict[int, int] = {}
        for index, param in enumerate(params):
            if not isinstance(param, Parameter):
                raise TypeError(
                    f"params[{index}] must be a Parameter, got {type(param).__name__}"
                )
            if id(param) in seen:
                raise ValueError(
                    f"params[{index}] is the same Parameter as params[{seen[id(param)]}]: "
                    f"list each Parameter once"
                )
            seen[id(param)] = index
        self._params = params
        self._use_guard = UseGuard()

    @property
    def params(self):
        """The optimized Parameters, as a tuple."""
        return self._params

    @params.setter
    def params(self, value):
        raise AttributeError(
            "Optimizer.params is read-only: create a new optimizer for other Parameters"
        )

    @property
    def lr(self):
        """Learning rate, >= 0, which may be changed between steps."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = _check_hyperparameter("lr", value, minimum=0.0)

    @property
    def weight_decay(self):
        """L2 penalty factor, >= 0, which may be changed between steps."""
        return self._weight_decay

    @weight_decay.setter
    def weight_decay(self, value):
        self._weight_decay = _check_hyperparameter("weight_decay", value, minimum=0.0)

    def zero_grad(self):
        """Set the ``.grad`` of every Parameter to zero, in place.

        The layers overwrite ``.grad`` in ``backward``, so a training loop over
        nnback layers does not need this call. It is there for gradients that
        the caller accumulates into ``.grad`` itself.
        """
        for param in self.params:
            param.grad.fill(0)

    def step(self):
        """Update every Parameter's ``.data`` in place from its ``.grad``."""
        raise NotImplementedError

    def _new_state(self, param):
        """Return a zero state buffer shaped like ``param``, with its flat view."""
        buffer = np.zeros(param.shape, dtype=param.dtype)
        return buffer, buffer.reshape(-1)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and weight decay.

    Parameters
    ----------
    params : iterable of Parameter
        The Parameters to update, each once, as from ``model.parameters()``.
    lr : float
        Learning rate, >= 0.
    momentum : float, default 0.0
        Momentum factor in [0, 1).
    nesterov : bool, default False
        Use Nesterov momentum (requires ``momentum > 0``).
    weight_decay : float, default 0.0
        L2 penalty factor, >= 0, added to the gradient as ``weight_decay * param``.

    Attributes
    ----------
    velocity : list of ndarray
        The momentum buffer of each Parameter (empty list without momentum).
        Read-only: write ``velocity[i][...] = values`` to change a buffer.

    Raises
    ------
    TypeError
        For ``params`` as in :class:`Optimizer`, a hyperparameter that is not a
        real number, or a ``nesterov`` that is not a bool.
    ValueError
        For ``params`` as in :class:`Optimizer`, a non-finite hyperparameter,
        ``lr < 0``, ``momentum`` outside [0, 1), ``weight_decay < 0``, or
        ``nesterov=True`` with ``momentum == 0``.

    Notes
    -----
    ``lr``, ``momentum``, ``nesterov`` and ``weight_decay`` may be changed
    between steps and are checked as in the constructor. Setting ``momentum``
    from 0 to a positive value creates zero velocity buffers, and setting it
    to 0 discards them. ``momentum`` cannot become 0 while ``nesterov`` is true.

    With ``g = grad + weight_decay * param`` and the velocity ``v`` starting
    at zero, each step computes::

        v     = momentum * v + g
        param = param - lr * (g + momentum * v)   nesterov=True
        param = param - lr * v                    nesterov=False

    Without momentum this is ``param = param - lr * g``.

    Examples
    --------
    >>> import numpy as np
    >>> from nnback import SGD, Parameter
    >>> p = Parameter(np.array([1.0, 2.0]))
    >>> p.grad[...] = [0.5, -1.0]
    >>> optimizer = SGD([p], lr=0.1)
    >>> optimizer.step()
    >>> print(p.data)
    [0.95 2.1 ]
    >>> SGD([p], lr=0.1, momentum=0.9, nesterov=True).velocity[0].shape
    (2,)
    """

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params)
        self.lr = lr
        self._nesterov = False
        self._velocity = []
        self._flat_velocity = []
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay

    @property
    def momentum(self):
        """Momentum factor in [0, 1)."""
        return self._momentum

    @momentum.setter
    def momentum(self, value):
        momentum = _check_hyperparameter("momentum", value, minimum=0.0, below=1.0)
        if momentum == 0 and self._nesterov:
            raise ValueError(
                f"momentum must be > 0 while nesterov is True, got {value!r}; "
                f"set nesterov = False first"
            )
        self._momentum = momentum
        if momentum == 0:
            self._velocity = []
            self._flat_velocity = []
        elif not self._flat_velocity:
            for param in self.params:
                buffer, flat = self._new_state(param)
                self._velocity.append(buffer)
                self._flat_velocity.append(flat)

    @property
    def velocity(self):
        """The momentum buffer of each Parameter, or an empty list without momentum."""
        return self._velocity

    @velocity.setter
    def velocity(self, value):
        raise AttributeError(
            "SGD.velocity is read-only, because step() updates the buffers it was built "
            "with: copy values in with optimizer.velocity[i][...] = values"
        )

    @property
    def nesterov(self):
        """Whether the update uses Nesterov momentum, which requires ``momentum > 0``."""
        return self._nesterov

    @nesterov.setter
    def nesterov(self, value):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"nesterov must be True or False, got {type(value).__name__}")
        if value and self._momentum == 0:
            raise ValueError(
                f"nesterov=True requires momentum > 0, got momentum={self._momentum}"
            )
        self._nesterov = bool(value)

    def __setstate__(self, state):
        # Flat views come back from pickling as copies: point them at the velocity again.
        self.__dict__.update(state)
        self._flat_velocity = [buffer.reshape(-1) for buffer in self._velocity]

    @exclusive
    def step(self):
        """Apply one SGD update to every Parameter.

        Raises
        ------
        RuntimeError
            If another thread is using the optimizer.
        """
        if self._momentum == 0:
            for param in self.params:
                _optim.sgd_update(param._flat_data, param._flat_grad, self._lr, self._weight_decay)
            return

        for index, param in enumerate(self.params):
            velocity = self._flat_velocity[index]
            _optim.sgd_momentum_update(
                param._flat_data, param._flat_grad, velocity, self._lr,
                self._momentum, self._weight_decay, self._nesterov,
            )

    def __repr__(self):
        return (
            f"SGD(lr={self._lr}, momentum={self._momentum}, nesterov={self._nesterov}, "
            f"weight_decay={self.weight_decay})"
        )


class Adam(Optimizer):
    """Adam with bias correction and L2 weight decay, as ``torch.optim.Adam``.

    Parameters
    ----------
    params : iterable of Parameter
        The Parameters to update, each once, as from ``model.parameters()``.
    lr : float, default 1e-3
        Learning rate, >= 0.
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the first and second moment estimates, each in [0, 1).
    eps : float, default 1e-8
        Added to the denominator, > 0.
    weight_decay : float, default 0.0
        L2 penalty factor, >= 0, added to the gradient as ``weight_decay * param``.

    Attributes
    ----------
    step_count : int
        Number of steps taken, >= 0.
    exp_avg, exp_avg_sq : list of ndarray
        First and second moment estimates of each Parameter. Read-only: write
        ``exp_avg[i][...] = values`` to change a buffer.

    Raises
    ------
    TypeError
        For ``params`` as in :class:`Optimizer`, a hyperparameter that is not a
        real number, or a ``step_count`` that is not an int.
    ValueError
        For ``params`` as in :class:`Optimizer`, a non-finite hyperparameter,
        ``lr < 0``, ``betas`` that are not a pair in [0, 1), ``eps <= 0``,
        ``weight_decay < 0``, or ``step_count < 0``.

    Notes
    -----
    ``lr``, ``betas``, ``eps``, ``weight_decay`` and ``step_count`` may be
    changed between steps and are checked as in the constructor.

    With ``g = grad + weight_decay * param``, the moments ``m`` and ``s``
    starting at zero and the step ``t = 1, 2, ...``, each step computes::

        m     = beta1 * m + (1 - beta1) * g
        s     = beta2 * s + (1 - beta2) * g * g
        param = param - lr / (1 - beta1**t) * m / (sqrt(s) / sqrt(1 - beta2**t) + eps)

    Examples
    --------
    The first step moves each entry by about ``lr`` against the sign of its
    gradient:

    >>> import numpy as np
    >>> from nnback import Adam, Parameter
    >>> p = Parameter(np.array([1.0, -1.0]))
    >>> p.grad[...] = [0.5, -2.0]
    >>> optimizer = Adam([p], lr=0.1)
    >>> optimizer.step()
    >>> print(np.round(p.data, 4))
    [ 0.9 -0.9]
    >>> optimizer.step_count
    1
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params)
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay

        self.step_count = 0
        self._exp_avg, self._exp_avg_sq = [], []
        self._flat_state = []
        for param in self.params:
            exp_avg, flat_avg = self._new_state(param)
            exp_avg_sq, flat_avg_sq = self._new_state(param)
            self._exp_avg.append(exp_avg)
            self._exp_avg_sq.append(exp_avg_sq)
            self._flat_state.append((flat_avg, flat_avg_sq))

    @property
    def exp_avg(self):
        """The first moment estimate of each Parameter."""
        return self._exp_avg

    @exp_avg.setter
    def exp_avg(self, value):
        raise AttributeError(
            "Adam.exp_avg is read-only, because step() updates the buffers it was built "
            "with: copy values in with optimizer.exp_avg[i][...] = values"
        )

    @property
    def exp_avg_sq(self):
        """The second moment estimate of each Parameter."""
        return self._exp_avg_sq

    @exp_avg_sq.setter
    def exp_avg_sq(self, value):
        raise AttributeError(
            "Adam.exp_avg_sq is read-only, because step() updates the buffers it was "
            "built with: copy values in with optimizer.exp_avg_sq[i][...] = values"
        )

    @property
    def betas(self):
        """Decay rates (beta1, beta2) of the moment estimates, each in [0, 1)."""
        return self._betas

    @betas.setter
    def betas(self, value):
        # A set or dict would unpack in an arbitrary order.
        if isinstance(value, (set, frozenset, dict)):
            raise ValueError(f"betas must be an ordered pair (beta1, beta2), got {value!r}")
        try:
            beta1, beta2 = value
        except (TypeError, ValueError) as error:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {value!r}") from error
        self._betas = (
            _check_hyperparameter("betas[0]", beta1, minimum=0.0, below=1.0),
            _check_hyperparameter("betas[1]", beta2, minimum=0.0, below=1.0),
        )

    @property
    def eps(self):
        """Term added to the denominator, > 0."""
        return self._eps

    @eps.setter
    def eps(self, value):
        self._eps = _check_hyperparameter("eps", value, above=0.0)

    @property
    def step_count(self):
        """Number of steps taken, which sets the bias correction of the next step."""
        return self._step_count

    @step_count.setter
    def step_count(self, value):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
            raise TypeError(f"step_count must be an int, got {type(value).__name__} {value!r}")
        if value < 0:
            raise ValueError(f"step_count must be >= 0, got {value!r}")
        self._step_count = int(value)

    def __setstate__(self, state):
        # Flat views come back from pickling as copies: point them at the moments again.
        self.__dict__.update(state)
        self._flat_state = [
            (exp_avg.reshape(-1), exp_avg_sq.reshape(-1))
            for exp_avg, exp_avg_sq in zip(self._exp_avg, self._exp_avg_sq)
        ]

    @exclusive
    def step(self):
        """Apply one Adam update to every Parameter and advance ``step_count``.

        Raises
        ------
        RuntimeError
            If another thread is using the optimizer.
        """
        beta1, beta2 = self._betas
        self._step_count += 1
        # Both corrections are > 0 for t >= 1, because the betas are below 1.
        bias_correction1 = 1.0 - beta1**self._step_count
        bias_correction2 = 1.0 - beta2**self._step_count
        step_size = self._lr / bias_correction1
        bias_correction2_sqrt = math.sqrt(bias_correction2)

        for index, param in enumerate(self.params):
            flat_avg, flat_avg_sq = self._flat_state[index]
            _optim.adam_update(
                param._flat_data, param._flat_grad, flat_avg, flat_avg_sq, step_size,
                beta1, beta2, self._eps, self._weight_decay, bias_correction2_sqrt,
            )

    def __repr__(self):
        return (
            f"Adam(lr={self._lr}, betas={self._betas}, eps={self._eps}, "
            f"weight_decay={self.weight_decay})"
        )
