r"""A scikit-learn compatible multilayer perceptron classifier on nnback's kernels.

:class:`MLPClassifier` takes the parameter names and meanings of
``sklearn.neural_network.MLPClassifier`` and trains a :func:`nnback.layers.mlp`
network with :func:`nnback.training.train_step` and nnback's SGD or Adam.

The model, for ``n_features`` inputs, hidden sizes ``h_1, ..., h_L`` and
``n_classes`` outputs, is::

    a_0 = x,   a_l = f(a_{l-1} @ W_l + b_l)  for l = 1..L,   z = a_L @ W_{L+1} + b_{L+1}
    p   = softmax(z)

with ``f`` the activation. Each mini-batch of ``B`` samples minimizes the mean
cross-entropy plus scikit-learn's L2 penalty on the weights (not the biases)::

    loss = mean_i(logsumexp(z_i) - z_i[y_i]) + alpha / (2 * B) * sum_l ||W_l||^2

so the penalty adds ``alpha * W_l / B`` to the gradient of each weight.

Initialization, shuffling, the early-stopping split, the Adam update and the
SGD learning-rate schedules follow scikit-learn 1.9's ``MLPClassifier`` and
draw from ``random_state`` in the same order. With ``dtype=np.float64`` and
three or more classes, a fit therefore starts from the same weights, visits
the samples in the same order and takes the same steps as scikit-learn's, up
to floating-point rounding.

This module requires scikit-learn >= 1.6. ``import nnback`` does not import it.
"""

import math
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from nnback.layers import Linear, Sequential, SoftmaxCrossEntropy, mlp
from nnback.optim import SGD, Adam
from nnback.training import NonFiniteLossError, train_step

__all__ = ["MLPClassifier"]

ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
SOLVERS = ("sgd", "adam")
LEARNING_RATE_SCHEDULES = ("constant", "invscaling", "adaptive")
# With learning_rate="adaptive", a stall divides the SGD learning rate by
# ADAPTIVE_DIVISOR, unless the rate is already at or below
# MIN_ADAPTIVE_LEARNING_RATE, which ends training (scikit-learn 1.9's values).
ADAPTIVE_DIVISOR = 5.0
MIN_ADAPTIVE_LEARNING_RATE = 1e-6
# Values of ``on_nonfinite``, named as for numpy.seterr.
NONFINITE_ACTIONS = ("raise", "warn", "ignore")

# scikit-learn's activation names and the names of nnback.layers.mlp.
_NNBACK_ACTIVATIONS = {"logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}

AUTO_BATCH_SIZE = 200

_SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------------------
# Optimizer with the L2 penalty on the weights only
# ---------------------------------------------------------------------------


class _ScikitLearnAdam(Adam):
    """Adam with the epsilon placement of scikit-learn's ``AdamOptimizer``.

    scikit-learn 1.9 updates ``param -= lr * sqrt(1 - beta2**t) / (1 - beta1**t)
    * m / (sqrt(s) + epsilon)`` at step t. Dividing the numerator and the
    denominator by ``sqrt(1 - beta2**t)`` gives nnback's (and PyTorch's) Adam
    update with ``eps = epsilon / sqrt(1 - beta2**t)``, which :meth:`step` sets
    before each update.
    """

    def __init__(self, params, lr, betas, epsilon):
        super().__init__(params, lr=lr, betas=betas, eps=epsilon)
        self.epsilon = epsilon

    def step(self):
        """Set ``eps`` for the coming step t and apply one Adam update."""
        beta2 = self.betas[1]
        self.eps = self.epsilon / math.sqrt(1.0 - beta2 ** (self.step_count + 1))
        super().step()


class _PenalizedOptimizer:
    """Two optimizers that step together: the weights with L2 decay, the biases without.

    The decay factor is ``alpha / B`` for a batch of ``B`` samples, so
    :meth:`set_batch_size` must be called before the first step and whenever
    the batch size changes.
    """

    def __init__(self, make_optimizer, weights, biases, alpha):
        self.alpha = alpha
        self.weight_optimizer = make_optimizer(weights)
        self.bias_optimizer = make_optimizer(biases) if biases else None
        self.batch_size = None

    @property
    def optimizers(self):
        return [opt for opt in (self.weight_optimizer, self.bias_optimizer) if opt is not None]

    @property
    def lr(self):
        """Learning rate, the same for the weights and the biases."""
        return self.weight_optimizer.lr

    def set_batch_size(self, batch_size):
        if batch_size != self.batch_size:
            self.weight_optimizer.weight_decay = self.alpha / batch_size
            self.batch_size = batch_size

    def step(self):
        self.weight_optimizer.step()
        if self.bias_optimizer is not None:
            self.bias_optimizer.step()


def _set_sgd_learning_rate(optimizer, rate):
    """Change the learning rate of an SGD or ``_PenalizedOptimizer`` of SGDs to ``rate``.

    scikit-learn's velocity accumulates the steps ``-lr * g`` with the rate of
    each past step, but nnback's accumulates gradients and multiplies the sum
    by the current ``lr``, so nnback's velocity equals scikit-learn's divided by
    ``-lr``. Scaling the velocity by ``old_rate / rate`` keeps that equality, so
    the following steps match scikit-learn's after a change of rate.
    """
    optimizers = optimizer.optimizers if isinstance(optimizer, _PenalizedOptimizer) else [optimizer]
    for sgd in optimizers:
        old_rate = sgd.lr
        if old_rate == rate:
            continue
        # NOTE: a rate that underflows to 0 (or so close to 0 that the scale
        # overflows) discards the velocity, because nnback's steps are then 0.
        # scikit-learn's would still apply its decaying velocity.
        scale = old_rate / rate if rate > 0 else math.inf
        for velocity in sgd.velocity:
            if math.isfinite(scale):
                velocity *= scale
            else:
                velocity.fill(0.0)
        sgd.lr = rate


def _optimizer_state(optimizer):
    """Return the state of an nnback SGD or Adam as a dict of plain values and arrays."""
    if isinstance(optimizer, Adam):
        return {
            "step_count": optimizer.step_count,
            "exp_avg": [array.copy() for array in optimizer.exp_avg],
            "exp_avg_sq": [array.copy() for array in optimizer.exp_avg_sq],
        }
    # The learning rate changes during training with learning_rate="invscaling"
    # or "adaptive", so it is state, not a setting.
    return {"lr": optimizer.lr, "velocity": [array.copy() for array in optimizer.velocity]}


def _restore_optimizer_state(optimizer, state):
    """Copy a state from :func:`_optimizer_state` into a new optimizer of the same kind."""
    if isinstance(optimizer, Adam):
        optimizer.step_count = state["step_count"]
        for target, source in zip(optimizer.exp_avg, state["exp_avg"]):
            target[...] = source
        for target, source in zip(optimizer.exp_avg_sq, state["exp_avg_sq"]):
            target[...] = source
        return
    optimizer.lr = state["lr"]
    for target, source in zip(optimizer.velocity, state["velocity"]):
        target[...] = source


# ---------------------------------------------------------------------------
# Estimator
# ---------------------------------------------------------------------------


class MLPClassifier(ClassifierMixin, BaseEstimator):
    """Multilayer perceptron classifier trained with SGD or Adam, compatible with scikit-learn.

    Parameters follow ``sklearn.neural_network.MLPClassifier`` (version 1.9) and
    keep their meaning. The differences:

    * The output layer is a softmax. For two classes it has two units, and the
      first stays fixed at logit 0 because its weights and bias are reset to
      zero after every step. The softmax over ``(0, z)`` is then scikit-learn's
      single logistic unit ``sigmoid(z)``, with the same gradient.
    * The reported loss is the exact cross-entropy. scikit-learn clips the
      probabilities to ``[eps, 1 - eps]`` first (eps of the dtype), so
      ``loss_curve_`` differs where predictions saturate, and with it
      stopping on ``tol``.
    * Only the stochastic solvers "sgd" and "adam" exist (see Notes).
    * ``dtype`` sets the dtype of the parameters and of the computation.
      Inputs are converted to it.
    * ``sample_weight`` and multilabel targets are not supported.

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default (100,)
        Number of units of each hidden layer. An empty sequence gives a linear
        softmax classifier.
    activation : {"relu", "tanh", "logistic", "identity"}, default "relu"
        Activation of the hidden layers.
    solver : {"adam", "sgd"}, default "adam"
    alpha : float, default 1e-4
        Strength of the L2 penalty ``alpha / (2 * B) * sum ||W||^2`` on the
        weights, for batches of B samples.
    batch_size : int or "auto", default "auto"
        Samples per mini-batch; "auto" is ``min(200, n_samples)``. Larger
        values are clipped to n_samples with a warning.
    learning_rate : {"constant", "invscaling", "adaptive"}, default "constant"
        Schedule of the learning rate of "sgd". "adam" ignores it and always
        uses ``learning_rate_init``.

        * "constant" keeps ``learning_rate_init``.
        * "invscaling" sets the rate to ``learning_rate_init / (t_ + 1) **
          power_t`` at the end of each epoch, where ``t_`` counts the samples
          seen so far. The rate therefore changes once per epoch, not per
          sample or batch, and the first epoch of each ``fit`` runs at
          ``learning_rate_init``.
        * "adaptive" starts at ``learning_rate_init``. When the training loss
          (or the validation score with ``early_stopping``) has not improved
          by ``tol`` for more than ``n_iter_no_change`` epochs, training does
          not stop but divides the rate by 5 and starts counting again. It
          stops once this happens at a rate of 1e-6 or less.

        ``partial_fit`` keeps the rate between calls, and ``fit`` starts again
        at ``learning_rate_init``, as in scikit-learn.
    learning_rate_init : float, default 1e-3
        The initial learning rate, > 0.
    power_t : float, default 0.5
        Exponent of the "invscaling" schedule, >= 0.
    max_iter : int, default 200
        Maximum number of epochs (passes over the data) per call to ``fit``.
    shuffle : bool, default True
        Whether to shuffle the samples in each epoch.
    random_state : None, int or numpy.random.RandomState, default None
        Seed of the initial weights, the shuffling and the validation split.
    tol : float, default 1e-4
        Minimum improvement of the training loss (or of the validation score
        with ``early_stopping``) that resets the ``n_iter_no_change`` count.
    verbose : bool, default False
        Print the loss of each epoch to stdout.
    warm_start : bool, default False
        Continue from the current weights in ``fit`` instead of starting anew.
    momentum : float, default 0.9
        Momentum of "sgd", in [0, 1).
    nesterovs_momentum : bool, default True
        Use Nesterov's momentum with "sgd" (when momentum > 0).
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the training data (stratified by
        class for two classes only, as scikit-learn 1.9 does), stop when its
        accuracy has not improved by ``tol`` for more than
        ``n_iter_no_change`` epochs, and keep the weights of the best epoch.
    validation_fraction : float, default 0.1
        Fraction of the samples held out with ``early_stopping``, in [0, 1).
    beta_1, beta_2 : float, default 0.9 and 0.999
        Decay rates of Adam's moment estimates, in [0, 1).
    epsilon : float, default 1e-8
        Adam's term added to the denominator, > 0.
    n_iter_no_change : int or numpy.inf, default 10
        Number of epochs without an improvement of at least ``tol`` that ends
        training once exceeded (or divides the rate, with
        ``learning_rate="adaptive"``).
    max_fun : int, default 15000
        Not used. scikit-learn passes it to its "lbfgs" solver as the maximum
        number of loss evaluations, and nnback has no "lbfgs". It is accepted
        and checked (an integer >= 1), so that parameters from scikit-learn
        code, such as ``get_params()`` output or a grid, can be set here.
    dtype : numpy.float32 or numpy.float64, default numpy.float32
        Dtype of the parameters and of the computation.
    on_nonfinite : {"raise", "warn", "ignore"}, default "raise"
        What a mini-batch with a NaN or infinite loss does. "raise" stops
        training there with :class:`nnback.NonFiniteLossError`, which names
        the epoch and the batch. "warn" issues one RuntimeWarning per call to
        ``fit`` or ``partial_fit`` and trains on, and "ignore" trains on
        silently. With "warn", non-finite weights at the end of training give
        a RuntimeWarning, and with "ignore" nothing, where "raise" raises
        ValueError. This parameter is nnback's own, and scikit-learn has no
        equivalent.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X has string feature names (a pandas DataFrame).
    n_iter_ : int
        Number of epochs run by the last call to ``fit`` or ``partial_fit``.
    t_ : int
        Number of training samples seen, counted once per sample and epoch.
    loss_ : float
        Mean training loss (with the penalty) of the last epoch.
    loss_curve_ : list of float
        The mean training loss of every epoch.
    best_loss_ : float or None
        The lowest loss in ``loss_curve_``; None with ``early_stopping``.
    validation_scores_ : list of float or None
        Accuracy on the held-out samples after each epoch, with ``early_stopping``.
    best_validation_score_ : float or None
        The best of ``validation_scores_``, with ``early_stopping``.
    n_layers_ : int
        Number of layers, counting the input and the output layer.
    n_outputs_ : int
        Number of output units as scikit-learn counts them: 1 for two classes,
        else ``n_classes``.
    out_activation_ : str
        "logistic" for two classes, else "softmax".
    coefs_ : list of ndarray
        Weight of each layer, shape (n_inputs, n_outputs), as in scikit-learn.
        These are views of the model's arrays: changing them changes the model.
        For two classes, the last one is the (n_inputs, 1) column of the
        second output unit.
    intercepts_ : list of ndarray
        Bias of each layer, shape (n_outputs,), views as for ``coefs_``.
    model_ : nnback.layers.Sequential
        The trained network, which outputs logits.

    Notes
    -----
    Every constructor parameter of scikit-learn 1.9's ``MLPClassifier`` is
    accepted, but some values and arguments are not:

    * ``solver="lbfgs"`` raises ValueError, because nnback trains only with
      mini-batch steps through :func:`nnback.training.train_step`, and a
      full-batch quasi-Newton method is outside that design. ``max_fun``
      is therefore unused.
    * ``momentum=1.0`` raises ValueError, because nnback's SGD requires
      momentum in [0, 1). scikit-learn accepts 1.0, where the velocity never
      decays.
    * ``fit`` and ``partial_fit`` take no ``sample_weight``, because the
      compiled loss weighs every sample of a batch equally. In scikit-learn,
      the third positional argument of ``partial_fit`` is ``sample_weight``,
      but here it is ``classes``, so pass ``classes`` by keyword in code
      that runs with both.
    * Multilabel targets raise ValueError, because the output layer is a
      softmax over mutually exclusive classes.

    With ``momentum > 0``, nnback's SGD keeps the velocity in units of the
    gradient, while scikit-learn's keeps it in units of a step. When a
    schedule changes the rate, the velocity is rescaled by the ratio of the
    old rate to the new one, so that the steps stay equal to scikit-learn's.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from nnback.estimator import MLPClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MLPClassifier(hidden_layer_sizes=(32,), learning_rate_init=0.01,
    ...                     max_iter=1000, random_state=0).fit(X, y)
    >>> clf.predict(X[:3]).tolist()
    [0, 0, 0]
    >>> clf.score(X, y) > 0.9
    True
    >>> clf.predict_proba(X[:2]).shape
    (2, 3)
    >>> [coef.shape for coef in clf.coefs_]
    [(4, 32), (32, 3)]

    For two classes the output layer has one column, as in scikit-learn:

    >>> binary = MLPClassifier(hidden_layer_sizes=(8,), learning_rate_init=0.01,
    ...                        max_iter=1000, random_state=0).fit(X[y < 2], y[y < 2])
    >>> binary.out_activation_, binary.coefs_[-1].shape
    ('logistic', (8, 1))
    """

    # Fitted attributes whose type mypy cannot infer from their assignments.
    classes_: np.ndarray
    validation_scores_: list[float] | None
    best_validation_score_: float | None
    best_loss_: float | None

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        dtype=np.float32,
        on_nonfinite="raise",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype
        self.on_nonfinite = on_nonfinite

    # -- public API ---------------------------------------------------------

    def fit(self, X, y):
        """Train the network on X (n_samples, n_features) and class labels y (n_samples,).

        Starts from new random weights unless ``warm_start`` is set and the
        model was fitted before. Runs at most ``max_iter`` epochs and stops
        earlier when the training loss (or, with ``early_stopping``, the
        validation score) has not improved by ``tol`` for more than
        ``n_iter_no_change`` epochs. With ``solver="sgd"`` and
        ``learning_rate="adaptive"``, such a stall divides the learning rate
        by 5 instead, and training stops only when the rate is already at or
        below 1e-6.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features)
            Training samples, converted to ``dtype`` and C order.
        y : array_like of shape (n_samples,)
            Class labels of any type that scikit-learn accepts for binary or
            multiclass targets, with at least two classes.

        Returns
        -------
        self : MLPClassifier
            The fitted estimator.

        Raises
        ------
        nnback.NonFiniteLossError
            With ``on_nonfinite="raise"``, at the first mini-batch whose loss is
            NaN or infinite. The exception is a ValueError, as scikit-learn
            raises for a diverged fit, and a FloatingPointError. Its
            ``epoch`` and ``batch`` attributes count from 1. The model keeps
            the weights after the update of that batch, and ``n_iter_`` and
            ``loss_curve_`` cover only the epochs that finished.
        ValueError
            With ``on_nonfinite="raise"``, if the weights are not finite after
            training, and for invalid parameters or data.

        Warns
        -----
        sklearn.exceptions.ConvergenceWarning
            If training stopped at ``max_iter`` epochs while still improving.
        UserWarning
            If ``batch_size`` exceeds the number of samples, or training was
            interrupted with Ctrl+C, which keeps the weights reached so far.
        """
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X, y, classes=None):
        """Run one epoch over X and y, starting from the current weights.

        A NaN or infinite loss is handled as ``on_nonfinite`` sets, as in
        :meth:`fit`.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features)
            Training samples, converted to ``dtype`` and C order.
        y : array_like of shape (n_samples,)
            Class labels, each one of ``classes``.
        classes : array_like of shape (n_classes,), optional
            Every class label that any call will see. Required in the first
            call, and optional, but checked against ``classes_``, later.

        Returns
        -------
        self : MLPClassifier
            The updated estimator.

        Raises
        ------
        ValueError
            If ``classes`` is missing in the first call or differs from the
            first call's, y contains a label outside ``classes``,
            ``early_stopping`` is set, the parameters or data are invalid, or,
            with ``on_nonfinite="raise"``, the weights are not finite.
        nnback.NonFiniteLossError
            With ``on_nonfinite="raise"``, as in :meth:`fit`.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import load_iris
        >>> from nnback.estimator import MLPClassifier
        >>> X, y = load_iris(return_X_y=True)
        >>> clf = MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
        >>> for _ in range(3):
        ...     clf = clf.partial_fit(X, y, classes=np.unique(y))
        >>> clf.n_iter_, clf.t_
        (1, 450)
        """
        first_call = not hasattr(self, "classes_")
        if first_call and classes is None:
            raise ValueError(
                "classes is None on the first call to partial_fit: pass every class "
                "label, for example classes=np.unique(y_all)"
            )
        if classes is not None:
            classes = self._unique_classes(np.asarray(classes), "classes")
            if not first_call and not np.array_equal(classes, self.classes_):
                raise ValueError(
                    f"classes={classes.tolist()} differs from the classes "
                    f"{self.classes_.tolist()} of the first call to partial_fit"
                )
        return self._fit(X, y, incremental=True, classes=classes)

    def predict(self, X):
        """Return the predicted class label of each row of X, shape (n_samples,).

        The label is the class of the largest logit of the row.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features)
            Samples, converted to the dtype of the fitted model.

        Returns
        -------
        y : ndarray of shape (n_samples,)
            Labels from ``classes_``, of its dtype.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the estimator has not been fitted.
        ValueError
            If X is invalid or has another number of features than in ``fit``.
        """
        logits = self._logits(X)
        return self.classes_[np.argmax(logits, axis=1)]

    def predict_proba(self, X):
        """Return the class probabilities of each row of X, shape (n_samples, n_classes).

        Columns follow ``classes_``. The softmax is evaluated in float64 from the
        logits, so every row sums to 1 within float64 rounding.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features)
            Samples, converted to the dtype of the fitted model.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes), float64

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the estimator has not been fitted.
        ValueError
            If X is invalid or has another number of features than in ``fit``.
        """
        logits = self._logits(X).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        return probabilities

    def predict_log_proba(self, X):
        """Return the log of the class probabilities, shape (n_samples, n_classes).

        Computed as ``z - logsumexp(z)`` in float64, so probabilities that
        underflow to 0 still get a finite log.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features)
            Samples, converted to the dtype of the fitted model.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes), float64
            Columns follow ``classes_``.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the estimator has not been fitted.
        ValueError
            If X is invalid or has another number of features than in ``fit``.
        """
        logits = self._logits(X).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        logits -= np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return logits

    @property
    def coefs_(self):
        """Weights of the Linear layers, shape (n_inputs, n_outputs) each."""
        weights = [layer.weight.data for layer in self._linear_layers()]
        if self._is_binary():
            weights[-1] = weights[-1][:, 1:]
        return weights

    @property
    def intercepts_(self):
        """Biases of the Linear layers, shape (n_outputs,) each."""
        biases = [layer.bias.data for layer in self._linear_layers()]
        if self._is_binary():
            biases[-1] = biases[-1][1:]
        return biases

    # -- checks ---------------------------------------------------------------

    def _is_binary(self):
        """Return whether the model has two classes, whose first logit is fixed at 0."""
        return len(self.classes_) == 2

    def _linear_layers(self):
        if not hasattr(self, "model_"):
            raise AttributeError(
                f"this {type(self).__name__} is not fitted yet: call fit or partial_fit first"
            )
        return [layer for layer in self.model_.layers if isinstance(layer, Linear)]

    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
            sizes = [sizes]
        try:
            sizes = list(sizes)
        except TypeError:
            raise ValueError(
                f"hidden_layer_sizes must be an int or a sequence of ints, got {sizes!r}"
            ) from None
        for size in sizes:
            if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
                raise ValueError(
                    f"hidden_layer_sizes must contain integers >= 1, got "
                    f"{self.hidden_layer_sizes!r}"
                )
        return [int(size) for size in sizes]

    def _check_parameters(self):
        """Raise ValueError for an invalid hyperparameter and return the resolved dtype."""
        self._hidden_sizes()
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.solver not in SOLVERS:
            raise ValueError(
                f"solver must be 'sgd' or 'adam', got {self.solver!r} (nnback has no lbfgs)"
            )
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            if (
                isinstance(self.batch_size, bool)
                or not isinstance(self.batch_size, numbers.Integral)
                or self.batch_size < 1
            ):
                raise ValueError(
                    f"batch_size must be 'auto' or an integer >= 1, got {self.batch_size!r}"
                )
        if not isinstance(self.learning_rate, str) or self.learning_rate not in LEARNING_RATE_SCHEDULES:
            raise ValueError(
                f"learning_rate must be one of {LEARNING_RATE_SCHEDULES}, got "
                f"{self.learning_rate!r} (the initial rate is learning_rate_init)"
            )
        integers = [("max_iter", self.max_iter), ("max_fun", self.max_fun)]
        for name, value in integers:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not (
            self.n_iter_no_change == np.inf
            or (
                isinstance(self.n_iter_no_change, numbers.Integral)
                and not isinstance(self.n_iter_no_change, bool)
                # typeshed's numbers.Integral and numbers.Real declare only < and <=.
                and self.n_iter_no_change >= 1  # type: ignore[operator]
            )
        ):
            raise ValueError(
                f"n_iter_no_change must be an integer >= 1 or numpy.inf, got "
                f"{self.n_iter_no_change!r}"
            )

        flags = [
            ("shuffle", self.shuffle),
            ("warm_start", self.warm_start),
            ("nesterovs_momentum", self.nesterovs_momentum),
            ("early_stopping", self.early_stopping),
        ]
        for name, value in flags:
            # A string such as "no" is truthy, so only real booleans are accepted.
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {value!r}")
        if isinstance(self.verbose, (bool, np.bool_)):
            pass
        elif not isinstance(self.verbose, numbers.Integral) or self.verbose < 0:
            raise ValueError(f"verbose must be a bool or an integer >= 0, got {self.verbose!r}")

        # (name, value, lowest allowed, whether the lowest is allowed, exclusive upper bound)
        ranges = [
            ("alpha", self.alpha, 0.0, True, None),
            ("learning_rate_init", self.learning_rate_init, 0.0, False, None),
            ("power_t", self.power_t, 0.0, True, None),
            ("tol", self.tol, 0.0, True, None),
            ("momentum", self.momentum, 0.0, True, 1.0),
            ("validation_fraction", self.validation_fraction, 0.0, True, 1.0),
            ("beta_1", self.beta_1, 0.0, True, 1.0),
            ("beta_2", self.beta_2, 0.0, True, 1.0),
            ("epsilon", self.epsilon, 0.0, False, None),
        ]
        for name, value, low, low_allowed, high in ranges:
            expected = f"{'>=' if low_allowed else '>'} {low:g}"
            if high is not None:
                expected += f" and < {high:g}"
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"{name} must be a real number {expected}, got {value!r}")
            # numbers.Real has no > or >= in typeshed, and NumPy's stubs reject it in isfinite.
            above_low = value >= low if low_allowed else value > low  # type: ignore[operator]
            below_high = high is None or value < high
            if not (np.isfinite(value) and above_low and below_high):  # type: ignore[call-overload]
                raise ValueError(f"{name} must be a finite number {expected}, got {value!r}")

        if not isinstance(self.on_nonfinite, str) or self.on_nonfinite not in NONFINITE_ACTIONS:
            raise ValueError(
                f"on_nonfinite must be one of {NONFINITE_ACTIONS}, got {self.on_nonfinite!r}"
            )

        dtype = None
        # np.dtype(None) would be float64, so None is rejected here.
        if self.dtype is not None:
            try:
                dtype = np.dtype(self.dtype)
            except TypeError:
                pass
        if dtype is None or dtype not in _SUPPORTED_DTYPES:
            raise ValueError(f"dtype must be numpy.float32 or numpy.float64, got {self.dtype!r}")
        return dtype

    @staticmethod
    def _unique_classes(labels, name):
        """Return the sorted unique labels after checking that they are class labels."""
        check_classification_targets(labels)
        target_type = type_of_target(labels, input_name=name)
        if target_type not in ("binary", "multiclass"):
            raise ValueError(
                f"{name} must contain binary or multiclass labels, got {target_type} "
                f"targets (multilabel and multioutput targets are not supported)"
            )
        return np.unique(labels)

    # -- training ---------------------------------------------------------------

    def _encode_labels(self, y, incremental, classes):
        """Set ``classes_`` if needed and return y as intp indices into it."""
        if incremental:
            known = self.classes_ if hasattr(self, "classes_") else classes
            present = self._unique_classes(y, "y")
            unknown = present[~np.isin(present, known)]
            if unknown.size:
                raise ValueError(
                    f"y contains the labels {unknown.tolist()}, which are not in classes "
                    f"{known.tolist()}"
                )
        else:
            known = self._unique_classes(y, "y")
            if self.warm_start and hasattr(self, "classes_"):
                if not np.array_equal(known, self.classes_):
                    raise ValueError(
                        f"warm_start needs the classes of the previous fit, "
                        f"{self.classes_.tolist()}, but y has {known.tolist()}"
                    )

        if known.size < 2:
            raise ValueError(
                f"MLPClassifier needs at least 2 classes to train, got 1 class: {known.tolist()}"
            )
        self.classes_ = known
        return np.searchsorted(self.classes_, y).astype(np.intp)

    @staticmethod
    def _build_model(layer_sizes, activation, dtype):
        """Return a new network: Linear layers with ``activation`` between them.

        The initial parameters are placeholders from a fixed seed: the caller
        overwrites them.
        """
        if activation != "identity":
            return mlp(layer_sizes, _NNBACK_ACTIVATIONS[activation], dtype=dtype, rng=0)

        generator = np.random.default_rng(0)
        layers = [
            Linear(n_in, n_out, dtype=dtype, init="glorot", rng=generator)
            for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:])
        ]
        return Sequential(*layers)

    def _initialize_parameters(self, random_state):
        """Draw the weights and biases of ``model_`` as scikit-learn's MLPClassifier does.

        Each layer draws its weight, then its bias, from ``U(-bound, bound)``
        with ``bound = sqrt(factor / (fan_in + fan_out))``, where ``factor`` is
        2 for "logistic" and 6 otherwise. The draws are float64 values of
        ``random_state`` in layer order, cast to the model dtype. For two
        classes the output layer draws one unit, as scikit-learn's does, and
        the fixed first unit is zero.
        """
        factor = 2.0 if self.activation == "logistic" else 6.0
        for layer, weight, bias in zip(self._linear_layers(), self.coefs_, self.intercepts_):
            fan_in, fan_out = weight.shape
            bound = math.sqrt(factor / (fan_in + fan_out))
            layer.weight.data.fill(0)
            layer.bias.data.fill(0)
            weight[...] = random_state.uniform(-bound, bound, weight.shape)
            bias[...] = random_state.uniform(-bound, bound, bias.shape)

    def _optimizer_settings(self):
        """Return the hyperparameters that the optimizer is built from."""
        return {
            "solver": self.solver,
            "learning_rate": self.learning_rate,
            "learning_rate_init": float(self.learning_rate_init),
            "power_t": float(self.power_t),
            "momentum": float(self.momentum),
            "nesterov": bool(self.nesterovs_momentum and self.momentum > 0),
            "betas": (float(self.beta_1), float(self.beta_2)),
            "epsilon": float(self.epsilon),
            "alpha": float(self.alpha),
        }

    def _create_optimizer(self, settings):
        """Return the optimizer for ``model_``, with the L2 penalty when alpha > 0."""

        def make_optimizer(parameters):
            if settings["solver"] == "adam":
                return _ScikitLearnAdam(
                    parameters,
                    lr=settings["learning_rate_init"],
                    betas=settings["betas"],
                    epsilon=settings["epsilon"],
                )
            return SGD(
                parameters,
                lr=settings["learning_rate_init"],
                momentum=settings["momentum"],
                nesterov=settings["nesterov"],
            )

        if settings["alpha"] == 0:
            return make_optimizer(self.model_.parameters())
        layers = self._linear_layers()
        weights = [layer.weight for layer in layers]
        biases = [layer.bias for layer in layers if layer.bias is not None]
        return _PenalizedOptimizer(make_optimizer, weights, biases, settings["alpha"])

    def _initialize(self, n_features, random_state):
        """Build a new network and reset the training history."""
        layer_sizes = [n_features, *self._hidden_sizes(), len(self.classes_)]
        self.model_ = self._build_model(layer_sizes, self.activation, self._dtype)
        self._initialize_parameters(random_state)
        # Early stopping restores these when no epoch improves the validation score.
        self._best_parameters = [p.data.copy() for p in self.model_.parameters()]
        self._layer_sizes = layer_sizes
        self._fitted_activation = self.activation
        self.n_layers_ = len(layer_sizes)
        self.n_outputs_ = 1 if self._is_binary() else len(self.classes_)
        self.out_activation_ = "logistic" if self._is_binary() else "softmax"

        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _fit(self, X, y, incremental, classes=None):
        self._dtype = self._check_parameters()
        if incremental and self.early_stopping:
            raise ValueError(
                "partial_fit does not support early_stopping=True: it runs a single "
                "epoch without a validation split"
            )

        first_pass = not hasattr(self, "model_") or (not self.warm_start and not incremental)
        if not first_pass and self.model_.dtype != self._dtype:
            raise ValueError(
                f"dtype={self.dtype!r} differs from the dtype {self.model_.dtype} of the "
                f"fitted model: refit without warm_start to change it"
            )
        if not first_pass:
            self._check_fitted_architecture()
        if self.early_stopping and not incremental and self.validation_fraction == 0:
            raise ValueError(
                "validation_fraction=0 leaves no validation set for early_stopping=True: "
                "pass a validation_fraction in (0, 1) or early_stopping=False"
            )
        X, y = validate_data(self, X, y, reset=first_pass, dtype=self._dtype, order="C")
        y_encoded = self._encode_labels(y, incremental, classes)

        random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(X.shape[1], random_state)
        if not incremental or not hasattr(self, "_optimizer"):
            self._fitted_optimizer_settings = self._optimizer_settings()
            self._optimizer = self._create_optimizer(self._fitted_optimizer_settings)

        self._fit_stochastic(X, y_encoded, incremental, random_state)

        if self.on_nonfinite != "ignore" and not all(
            np.isfinite(p.data).all() for p in self.model_.parameters()
        ):
            message = (
                "training produced non-finite weights: scale the features (for example "
                "with sklearn.preprocessing.StandardScaler) or lower learning_rate_init"
            )
            if self.on_nonfinite == "raise":
                raise ValueError(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        return self

    def _check_fitted_architecture(self):
        """Raise ValueError if hidden_layer_sizes or activation changed since the network was built.

        warm_start and partial_fit continue training the fitted network, which
        would otherwise keep its old layers without a word.
        """
        fitted_hidden = list(self._layer_sizes[1:-1])
        if list(self._hidden_sizes()) != fitted_hidden:
            raise ValueError(
                f"hidden_layer_sizes={self.hidden_layer_sizes!r} differs from the hidden "
                f"layer sizes {tuple(fitted_hidden)} of the fitted network: refit without "
                f"warm_start (or start partial_fit on a new estimator) to change them"
            )
        if self.activation != self._fitted_activation:
            raise ValueError(
                f"activation={self.activation!r} differs from the activation "
                f"{self._fitted_activation!r} of the fitted network: refit without "
                f"warm_start (or start partial_fit on a new estimator) to change it"
            )

    def _batch_size(self, n_samples):
        if self.batch_size == "auto":
            return min(AUTO_BATCH_SIZE, n_samples)
        if self.batch_size > n_samples:
            warnings.warn(
                f"batch_size={self.batch_size} is larger than the {n_samples} training "
                f"samples: using batches of {n_samples}",
                UserWarning,
                stacklevel=5,
            )
        return min(self.batch_size, n_samples)

    def _split_validation(self, X, y, random_state):
        """Hold out ``validation_fraction`` of the samples for early stopping.

        The split selects the same samples as scikit-learn 1.9 for the same
        ``random_state``. Its code stratifies by class only for two classes
        (``n_outputs_ == 1``, with the indicator column of the second class),
        so a multiclass split here is not stratified either.
        """
        # NOTE: scikit-learn's documentation describes the split as stratified
        # for every problem except multilabel ones, but its code stratifies only
        # binary problems. This follows the code, so that fits agree.
        stratify = (y == 1)[:, np.newaxis] if len(self.classes_) == 2 else None
        X_train, X_val, y_train, y_val = train_test_split(
            X, y, test_size=self.validation_fraction, random_state=random_state,
            stratify=stratify,
        )
        if X_val.shape[0] < 2:
            raise ValueError(
                f"the validation set has {X_val.shape[0]} sample(s): early_stopping needs "
                f"at least 2, so increase validation_fraction={self.validation_fraction} "
                f"or pass more samples"
            )
        return (
            np.ascontiguousarray(X_train),
            np.ascontiguousarray(y_train),
            np.ascontiguousarray(X_val),
            y_val,
        )

    def _fit_stochastic(self, X, y, incremental, random_state):
        early_stopping = self.early_stopping and not incremental
        X_val = y_val = None
        if early_stopping:
            X, y, X_val, y_val = self._split_validation(X, y, random_state)

        n_samples = X.shape[0]
        batch_size = self._batch_size(n_samples)
        model, optimizer = self.model_, self._optimizer
        # The schedule is the one the optimizer was created with, as in
        # scikit-learn, where partial_fit keeps the optimizer of its first call.
        settings = self._fitted_optimizer_settings
        schedule = settings["learning_rate"] if settings["solver"] == "sgd" else "constant"
        loss = SoftmaxCrossEntropy()
        penalized = isinstance(optimizer, _PenalizedOptimizer)
        flat_weights = [layer.weight.data.reshape(-1) for layer in self._linear_layers()]
        # For two classes, the first output unit is reset to zero after each
        # step (see the class documentation).
        output_layer = self._linear_layers()[-1]
        fixed_weight = output_layer.weight.data[:, 0] if self._is_binary() else None
        fixed_bias = output_layer.bias.data[:1] if self._is_binary() else None

        if self.shuffle:
            # Each epoch gathers the shuffled samples here, so that every batch
            # is a C-contiguous slice. As in scikit-learn, each epoch permutes
            # the previous epoch's order.
            X_epoch = np.empty_like(X)
            y_epoch = np.empty_like(y)
            order = np.arange(n_samples)
        else:
            X_epoch, y_epoch = X, y

        self.n_iter_ = 0
        # "warn" reports only the first non-finite loss of a call, and
        # "ignore" none, so both start as reported.
        nonfinite_reported = self.on_nonfinite == "ignore"
        try:
            for epoch in range(self.max_iter):
                if self.shuffle:
                    order = order[random_state.permutation(n_samples)]
                    np.take(X, order, axis=0, out=X_epoch)
                    np.take(y, order, out=y_epoch)

                accumulated_loss = 0.0
                for start in range(0, n_samples, batch_size):
                    stop = min(start + batch_size, n_samples)
                    n_batch = stop - start
                    batch_loss = 0.0
                    if penalized:
                        optimizer.set_batch_size(n_batch)
                        # A diverging fit overflows here. The non-finite loss that
                        # results is handled below as on_nonfinite sets.
                        with np.errstate(over="ignore", invalid="ignore"):
                            squared_norm = sum(float(w @ w) for w in flat_weights)
                        batch_loss = 0.5 * self.alpha * squared_norm / n_batch
                    batch_loss += train_step(
                        model, loss, optimizer, X_epoch[start:stop], y_epoch[start:stop]
                    )
                    if not math.isfinite(batch_loss) and not nonfinite_reported:
                        batch_number = start // batch_size + 1
                        self._report_nonfinite_loss(batch_loss, batch_number)
                        nonfinite_reported = True
                    if fixed_weight is not None and fixed_bias is not None:
                        fixed_weight.fill(0)
                        fixed_bias.fill(0)
                    accumulated_loss += batch_loss * n_batch

                self.n_iter_ += 1
                self.t_ += n_samples
                self.loss_ = accumulated_loss / n_samples
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")

                self._update_no_improvement_count(early_stopping, X_val, y_val)
                if schedule == "invscaling":
                    _set_sgd_learning_rate(optimizer, self._invscaling_rate(settings))
                if self._no_improvement_count > self.n_iter_no_change:
                    if schedule == "adaptive" and optimizer.lr > MIN_ADAPTIVE_LEARNING_RATE:
                        _set_sgd_learning_rate(optimizer, optimizer.lr / ADAPTIVE_DIVISOR)
                        self._no_improvement_count = 0
                        if self.verbose:
                            print(self._adaptive_message(early_stopping, optimizer.lr))
                    else:
                        if self.verbose:
                            print(self._stopping_message(early_stopping, schedule))
                        break
                if incremental:
                    break
                if epoch == self.max_iter - 1:
                    quantity = "validation score" if early_stopping else "training loss"
                    warnings.warn(
                        f"{type(self).__name__} stopped at max_iter={self.max_iter} epochs "
                        f"before the {quantity} stopped improving by tol={self.tol:g}: "
                        f"increase max_iter for a converged model",
                        ConvergenceWarning,
                        stacklevel=4,
                    )
        except KeyboardInterrupt:
            warnings.warn(
                f"training was interrupted after {self.n_iter_} epoch(s): the model keeps "
                f"the weights it had reached",
                UserWarning,
                stacklevel=4,
            )

        if early_stopping:
            for parameter, best in zip(model.parameters(), self._best_parameters):
                np.copyto(parameter.data, best)

    def _report_nonfinite_loss(self, batch_loss, batch_number):
        """Raise NonFiniteLossError or warn, as ``on_nonfinite`` sets, for a non-finite batch loss.

        The epoch is ``n_iter_ + 1``, the one in progress, counted from 1 in each
        call to fit or partial_fit.
        """
        epoch = self.n_iter_ + 1
        where = f"the loss of batch {batch_number} in epoch {epoch} (both counted from 1)"
        advice = (
            "scale the features (for example with sklearn.preprocessing.StandardScaler) "
            "or lower learning_rate_init"
        )
        if self.on_nonfinite == "raise":
            raise NonFiniteLossError(
                f"{where} is {batch_loss}: {advice}, or pass on_nonfinite='warn' or "
                f"'ignore' to train on",
                epoch,
                batch_number,
                batch_loss,
            )
        warnings.warn(
            f"{where} is {batch_loss}: {advice}. Training goes on because "
            f"on_nonfinite='warn', and later non-finite losses of this call are not reported",
            RuntimeWarning,
            stacklevel=5,
        )

    def _stall_message(self, early_stopping):
        quantity = "Validation score" if early_stopping else "Training loss"
        return (
            f"{quantity} did not improve by more than tol={self.tol:g} for "
            f"{self.n_iter_no_change} consecutive epochs."
        )

    def _stopping_message(self, early_stopping, schedule):
        if schedule == "adaptive":
            return (
                f"{self._stall_message(early_stopping)} The learning rate is at or below "
                f"{MIN_ADAPTIVE_LEARNING_RATE:g}. Stopping."
            )
        return f"{self._stall_message(early_stopping)} Stopping."

    def _adaptive_message(self, early_stopping, rate):
        return (
            f"{self._stall_message(early_stopping)} Learning rate divided by "
            f"{ADAPTIVE_DIVISOR:g} to {rate:g}."
        )

    def _invscaling_rate(self, settings):
        """Return ``learning_rate_init / (t_ + 1) ** power_t``, scikit-learn's rate after an epoch.

        ``t_`` counts the samples seen so far, including those of earlier calls.
        """
        try:
            return settings["learning_rate_init"] / (self.t_ + 1) ** settings["power_t"]
        except OverflowError:
            # (t_ + 1) ** power_t exceeds the float range, so the rate is 0 in float64.
            return 0.0

    def _update_no_improvement_count(self, early_stopping, X_val, y_val):
        """Count epochs without improvement, with scikit-learn's rules for tol."""
        if early_stopping:
            # A warm start after a fit without early stopping has no scores yet.
            if self.validation_scores_ is None or self.best_validation_score_ is None:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
            score = float(np.mean(self._predict_indices(X_val) == y_val))
            self.validation_scores_.append(score)
            if self.verbose:
                print(f"Validation score: {score:.6f}")
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_parameters = [p.data.copy() for p in self.model_.parameters()]
            return

        # A fit with early stopping leaves best_loss_ None, and a later warm
        # start or partial_fit without it starts its own record.
        if self.best_loss_ is None:
            self.best_loss_ = np.inf
        if self.loss_curve_[-1] > self.best_loss_ - self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if self.loss_curve_[-1] < self.best_loss_:
            self.best_loss_ = self.loss_curve_[-1]

    # -- prediction --------------------------------------------------------------

    def _predict_indices(self, X):
        return np.argmax(self.model_.predict(X), axis=1)

    def _logits(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=self.model_.dtype, order="C")
        return self.model_.predict(X)

    # -- pickling ------------------------------------------------------------------

    def __getstate__(self):
        # The network and the optimizers are stored as their arrays and rebuilt
        # on loading, because their work buffers and flat views of the
        # parameters would not survive pickling as views.
        # A copy, because object.__getstate__ may return the instance's own __dict__.
        state = dict(super().__getstate__())
        model = state.pop("model_", None)
        optimizer = state.pop("_optimizer", None)
        if model is not None:
            state["_model_parameters"] = [p.data.copy() for p in model.parameters()]
        if optimizer is not None:
            optimizers = (
                optimizer.optimizers if isinstance(optimizer, _PenalizedOptimizer) else [optimizer]
            )
            state["_optimizer_states"] = [_optimizer_state(opt) for opt in optimizers]
        return state

    def __setstate__(self, state):
        state = dict(state)
        parameters = state.pop("_model_parameters", None)
        optimizer_states = state.pop("_optimizer_states", None)
        super().__setstate__(state)
        if parameters is None:
            return

        self.model_ = self._build_model(
            self._layer_sizes, self._fitted_activation, parameters[0].dtype
        )
        for parameter, values in zip(self.model_.parameters(), parameters):
            np.copyto(parameter.data, values)

        if optimizer_states is not None:
            self._optimizer = self._create_optimizer(self._fitted_optimizer_settings)
            optimizers = (
                self._optimizer.optimizers
                if isinstance(self._optimizer, _PenalizedOptimizer)
                else [self._optimizer]
            )
            for optimizer, optimizer_state in zip(optimizers, optimizer_states):
                _restore_optimizer_state(optimizer, optimizer_state)
