"""Tests of nnback.estimator.MLPClassifier: scikit-learn's estimator checks,
parity with sklearn.neural_network.MLPClassifier, and the training semantics."""

import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn", minversion="1.6")

from sklearn.datasets import load_breast_cancer, load_digits, make_blobs  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier as SklearnMLPClassifier  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from nnback.estimator import MLPClassifier  # noqa: E402

# Most fits here stop at max_iter on purpose, so the warning is ignored. Tests of
# the warning itself catch it explicitly.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# Checks of scikit-learn's suite that this estimator does not pass, each with the
# reason. It is empty because every check passes with scikit-learn 1.9.1.
EXPECTED_FAILED_CHECKS = {}


def expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS


@parametrize_with_checks(
    [MLPClassifier(), MLPClassifier(dtype=np.float64)],
    expected_failed_checks=expected_failed_checks,
)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


# ---------------------------------------------------------------------------
# Parity with scikit-learn on real data sets
# ---------------------------------------------------------------------------


def scaled_split(loader):
    X, y = loader(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, random_state=0, stratify=y
    )
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


PARITY_CASES = [
    ("digits-adam-relu", load_digits, dict(solver="adam", activation="relu")),
    ("digits-sgd-tanh", load_digits, dict(solver="sgd", activation="tanh", learning_rate_init=0.01)),
    ("breast_cancer-adam-logistic", load_breast_cancer, dict(solver="adam", activation="logistic")),
]


@pytest.mark.parametrize(
    "loader, params", [case[1:] for case in PARITY_CASES], ids=[case[0] for case in PARITY_CASES]
)
def test_accuracy_matches_sklearn(loader, params):
    X_train, X_test, y_train, y_test = scaled_split(loader)
    shared = dict(hidden_layer_sizes=(100,), max_iter=60, random_state=0, **params)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(**shared).fit(X_train, y_train)
        theirs = SklearnMLPClassifier(**shared).fit(X_train, y_train)
    our_accuracy = ours.score(X_test, y_test)
    their_accuracy = theirs.score(X_test, y_test)

    assert our_accuracy >= their_accuracy - 0.02
    assert our_accuracy >= 0.93


# ---------------------------------------------------------------------------
# Labels and outputs
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=120, centers=3, n_features=4, random_state=0)
    return StandardScaler().fit_transform(X), y


LABEL_KINDS = {
    "int": np.array([3, 7, 11]),
    "negative_int": np.array([-5, 0, 2]),
    "str": np.array(["cat", "dog", "eel"]),
    "object_str": np.array(["cat", "dog", "eel"], dtype=object),
    "integral_float": np.array([1.0, 2.0, 4.0]),
}


@pytest.mark.parametrize("kind", list(LABEL_KINDS))
def test_classes_any_label_type(blobs, kind):
    X, y_index = blobs
    labels = LABEL_KINDS[kind]
    y = labels[y_index]

    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=100, random_state=0).fit(X, y)
    predictions = clf.predict(X)

    np.testing.assert_array_equal(clf.classes_, np.sort(labels))
    assert predictions.dtype == clf.classes_.dtype
    assert np.isin(predictions, labels).all()
    assert clf.score(X, y) > 0.9


def test_bool_labels_binary(blobs):
    X, y_index = blobs
    y = y_index == 1

    clf = MLPClassifier(
        hidden_layer_sizes=(8,), learning_rate_init=0.01, max_iter=200, random_state=0
    ).fit(X, y)

    np.testing.assert_array_equal(clf.classes_, [False, True])
    assert clf.n_outputs_ == 1
    assert clf.out_activation_ == "logistic"
    assert clf.coefs_[-1].shape == (8, 1)
    assert clf.intercepts_[-1].shape == (1,)
    assert clf.predict_proba(X).shape == (120, 2)
    assert clf.score(X, y) > 0.9


def test_binary_first_output_unit_fixed_at_zero(blobs):
    X, y_index = blobs
    y = y_index == 1

    clf = MLPClassifier(hidden_layer_sizes=(8,), alpha=0.1, max_iter=20, random_state=0).fit(X, y)
    output_layer = clf.model_.layers[-1]
    z = forward_logits(clf, X)[:, 0]

    np.testing.assert_array_equal(output_layer.weight.data[:, 0], 0.0)
    assert output_layer.bias.data[0] == 0.0
    np.testing.assert_allclose(clf.predict_proba(X)[:, 1], 1 / (1 + np.exp(-z)), rtol=1e-5)


def test_probabilities(blobs):
    X, y = blobs
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=0).fit(X, y)

    probabilities = clf.predict_proba(X)
    log_probabilities = clf.predict_log_proba(X)

    assert probabilities.dtype == np.float64
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.exp(log_probabilities), probabilities, rtol=1e-12)
    np.testing.assert_array_equal(clf.classes_[probabilities.argmax(axis=1)], clf.predict(X))


def test_single_class_rejected(blobs):
    X, _ = blobs

    with pytest.raises(ValueError, match="at least 2 classes"):
        MLPClassifier().fit(X, np.zeros(len(X)))


def test_unfitted_predict():
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(np.zeros((2, 3)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_dtype_of_model(blobs, dtype):
    X, y = blobs
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0, dtype=dtype)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)

    assert clf.model_.dtype == dtype
    assert all(coef.dtype == dtype for coef in clf.coefs_)


def test_identity_activation_is_linear(blobs):
    X, y = blobs
    clf = MLPClassifier(hidden_layer_sizes=(5,), activation="identity", max_iter=50, random_state=0)

    clf.fit(X, y)
    (W1, W2), (b1, b2) = clf.coefs_, clf.intercepts_
    expected = (X @ W1 + b1) @ W2 + b2

    np.testing.assert_allclose(clf.model_.predict(X.astype(np.float32)), expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# Exact parity with scikit-learn in float64
# ---------------------------------------------------------------------------

# In float64 a fit draws the same initial weights, visits the samples in the
# same order and takes the same steps as scikit-learn's, so the parameters
# agree up to rounding. Measured differences were below 2e-15 after 200
# epochs, and the tolerance leaves room for other BLAS builds.
FLOAT64_PARITY_ATOL = 1e-10

EXACT_PARITY_CASES = [
    ("adam-relu", "digits", dict(max_iter=4)),
    ("adam-alpha-batch", "digits", dict(max_iter=4, alpha=0.5, batch_size=64)),
    ("sgd-nesterov-tanh", "digits", dict(solver="sgd", activation="tanh", learning_rate_init=0.05, max_iter=4)),
    ("sgd-no-momentum", "digits", dict(solver="sgd", momentum=0.0, alpha=0.1, learning_rate_init=0.05, max_iter=4)),
    ("sgd-momentum-logistic", "digits", dict(solver="sgd", nesterovs_momentum=False, activation="logistic", max_iter=4)),
    ("identity", "digits", dict(activation="identity", max_iter=4)),
    ("no-shuffle", "digits", dict(shuffle=False, max_iter=4)),
    ("early-stopping", "digits", dict(early_stopping=True, n_iter_no_change=2, max_iter=40)),
    ("tol-stop", "digits", dict(tol=1e-2, n_iter_no_change=2, max_iter=200)),
    ("binary-adam", "breast_cancer", dict(max_iter=4, alpha=0.1)),
    ("binary-sgd", "breast_cancer", dict(solver="sgd", learning_rate_init=0.05, max_iter=4)),
    ("binary-early-stopping", "breast_cancer", dict(early_stopping=True, n_iter_no_change=2, max_iter=40)),
]


@pytest.fixture(scope="module")
def small_datasets():
    digits_X, digits_y = load_digits(return_X_y=True)
    cancer_X, cancer_y = load_breast_cancer(return_X_y=True)
    return {
        "digits": (digits_X[:400] / 16.0, digits_y[:400]),
        "breast_cancer": (cancer_X / cancer_X.max(axis=0), cancer_y),
    }


def assert_same_fit(ours, theirs):
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.t_ == theirs.t_
    assert ours.n_outputs_ == theirs.n_outputs_
    assert ours.out_activation_ == theirs.out_activation_
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=0, atol=FLOAT64_PARITY_ATOL)
    for mine, reference in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert mine.shape == reference.shape
        np.testing.assert_allclose(mine, reference, rtol=0, atol=FLOAT64_PARITY_ATOL)


@pytest.mark.parametrize(
    "dataset, params",
    [case[1:] for case in EXACT_PARITY_CASES],
    ids=[case[0] for case in EXACT_PARITY_CASES],
)
def test_float64_fit_equals_sklearn(small_datasets, dataset, params):
    X, y = small_datasets[dataset]
    shared = dict(hidden_layer_sizes=(12, 7), random_state=3, **params)

    ours = MLPClassifier(dtype=np.float64, **shared).fit(X, y)
    theirs = SklearnMLPClassifier(**shared).fit(X, y)

    assert_same_fit(ours, theirs)
    if params.get("early_stopping"):
        assert ours.validation_scores_ == theirs.validation_scores_
        assert ours.best_validation_score_ == theirs.best_validation_score_
    else:
        assert ours.best_loss_ == pytest.approx(theirs.best_loss_, abs=FLOAT64_PARITY_ATOL)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-9)


def test_float64_partial_fit_equals_sklearn(small_datasets):
    X, y = small_datasets["digits"]
    shared = dict(hidden_layer_sizes=(12,), alpha=0.1, random_state=3)
    ours = MLPClassifier(dtype=np.float64, **shared)
    theirs = SklearnMLPClassifier(**shared)

    for start in range(0, 400, 100):
        ours.partial_fit(X[start:start + 100], y[start:start + 100], classes=np.arange(10))
        theirs.partial_fit(X[start:start + 100], y[start:start + 100], classes=np.arange(10))

    assert_same_fit(ours, theirs)


def test_float64_warm_start_equals_sklearn(small_datasets):
    X, y = small_datasets["digits"]
    shared = dict(hidden_layer_sizes=(12,), warm_start=True, max_iter=3, random_state=3)
    ours = MLPClassifier(dtype=np.float64, **shared)
    theirs = SklearnMLPClassifier(**shared)

    for _ in range(3):
        ours.fit(X, y)
        theirs.fit(X, y)

    assert len(ours.loss_curve_) == 9
    assert_same_fit(ours, theirs)


# ---------------------------------------------------------------------------
# SGD learning-rate schedules, with exact parity in float64
# ---------------------------------------------------------------------------

# Settings under which each schedule changes the rate several times within the
# run: "adaptive" needs a tol that the loss or the validation score often
# misses, so that stalls divide the rate.
SCHEDULE_SETTINGS = {
    ("invscaling", False): dict(learning_rate_init=0.2, power_t=0.3, alpha=0.1, max_iter=8),
    ("invscaling", True): dict(learning_rate_init=0.2, power_t=0.3, n_iter_no_change=2, max_iter=40),
    ("adaptive", False): dict(learning_rate_init=0.05, tol=1e-2, n_iter_no_change=2, max_iter=60),
    ("adaptive", True): dict(learning_rate_init=0.05, tol=2e-2, n_iter_no_change=2, max_iter=100),
}


def final_learning_rate(sklearn_clf):
    """The rate that scikit-learn's SGD optimizer would use for the next step."""
    return sklearn_clf._optimizer.learning_rate


@pytest.mark.parametrize("nesterov", [True, False], ids=["nesterov", "momentum"])
@pytest.mark.parametrize("early_stopping", [False, True], ids=["no-early-stopping", "early-stopping"])
@pytest.mark.parametrize("schedule", ["invscaling", "adaptive"])
def test_float64_schedule_equals_sklearn(small_datasets, schedule, early_stopping, nesterov):
    X, y = small_datasets["digits"]
    shared = dict(
        hidden_layer_sizes=(12, 7), solver="sgd", learning_rate=schedule,
        nesterovs_momentum=nesterov, early_stopping=early_stopping, random_state=3,
        **SCHEDULE_SETTINGS[schedule, early_stopping],
    )

    ours = MLPClassifier(dtype=np.float64, **shared).fit(X, y)
    theirs = SklearnMLPClassifier(**shared).fit(X, y)

    assert_same_fit(ours, theirs)
    assert ours._optimizer.lr == pytest.approx(final_learning_rate(theirs), rel=1e-15)
    # The schedule must have lowered the rate, or the case tests nothing.
    assert ours._optimizer.lr < shared["learning_rate_init"]
    if early_stopping:
        assert ours.validation_scores_ == theirs.validation_scores_


def test_invscaling_rate_after_each_epoch(blobs):
    # The rate of the coming epoch is learning_rate_init / (t + 1) ** power_t,
    # with t the number of samples seen so far.
    X, y = blobs
    clf = MLPClassifier(
        hidden_layer_sizes=(6,), solver="sgd", learning_rate="invscaling",
        learning_rate_init=0.3, power_t=0.7, random_state=0,
    )

    for epoch in range(1, 4):
        clf.partial_fit(X, y, classes=[0, 1, 2])
        assert clf.t_ == epoch * len(X)
        assert clf._optimizer.lr == pytest.approx(0.3 / (epoch * len(X) + 1) ** 0.7, rel=1e-15)


def test_adaptive_stops_at_min_rate(blobs):
    # With tol=10 only the first epoch counts as an improvement. After that,
    # every second epoch is a stall (n_iter_no_change=1) and divides the rate
    # by 5: 0.05 / 5**7 = 6.4e-7 is the first rate at or below 1e-6, and the
    # stall after it, at epoch 1 + 2 * 8, stops training.
    X, y = blobs
    clf = MLPClassifier(
        hidden_layer_sizes=(6,), solver="sgd", learning_rate="adaptive",
        learning_rate_init=0.05, tol=10.0, n_iter_no_change=1, max_iter=100, random_state=0,
    )
    expected_rate = 0.05
    for _ in range(7):
        expected_rate /= 5.0

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf.fit(X, y)

    assert clf.n_iter_ == 17
    assert clf._optimizer.lr == expected_rate
    assert clf._no_improvement_count == 2


def test_adaptive_verbose_messages(blobs, capsys):
    X, y = blobs
    MLPClassifier(
        hidden_layer_sizes=(6,), solver="sgd", learning_rate="adaptive", learning_rate_init=1e-5,
        tol=10.0, n_iter_no_change=1, max_iter=100, verbose=True, random_state=0,
    ).fit(X, y)

    output = capsys.readouterr().out
    assert "Learning rate divided by 5 to 2e-06." in output
    assert "The learning rate is at or below 1e-06. Stopping." in output


@pytest.mark.parametrize("schedule", ["invscaling", "adaptive"])
def test_float64_schedule_partial_fit_and_pickle(small_datasets, schedule):
    # partial_fit keeps the optimizer and its rate between calls, and pickling
    # in the middle must keep the rate and the velocity.
    X, y = small_datasets["digits"]
    shared = dict(
        hidden_layer_sizes=(12,), solver="sgd", learning_rate=schedule, learning_rate_init=0.1,
        tol=0.5, n_iter_no_change=1, alpha=0.1, random_state=3,
    )
    ours = MLPClassifier(dtype=np.float64, **shared)
    theirs = SklearnMLPClassifier(**shared)

    for call in range(6):
        start = (call % 4) * 100
        ours.partial_fit(X[start:start + 100], y[start:start + 100], classes=np.arange(10))
        theirs.partial_fit(X[start:start + 100], y[start:start + 100], classes=np.arange(10))
        if call == 2:
            ours = pickle.loads(pickle.dumps(ours))

    assert_same_fit(ours, theirs)
    assert ours._optimizer.lr == pytest.approx(final_learning_rate(theirs), rel=1e-15)
    assert ours._optimizer.lr < 0.1


@pytest.mark.parametrize("schedule", ["invscaling", "adaptive"])
def test_float64_schedule_warm_start_equals_sklearn(small_datasets, schedule):
    # Each fit creates a new optimizer, so its first epoch runs at
    # learning_rate_init again, while t_ keeps counting.
    X, y = small_datasets["digits"]
    shared = dict(
        hidden_layer_sizes=(12,), solver="sgd", learning_rate=schedule, learning_rate_init=0.1,
        tol=0.05, n_iter_no_change=1, warm_start=True, max_iter=4, random_state=3,
    )
    ours = MLPClassifier(dtype=np.float64, **shared)
    theirs = SklearnMLPClassifier(**shared)

    for _ in range(3):
        ours.fit(X, y)
        theirs.fit(X, y)

    assert_same_fit(ours, theirs)
    assert ours._optimizer.lr == pytest.approx(final_learning_rate(theirs), rel=1e-15)


@pytest.mark.parametrize("schedule", ["invscaling", "adaptive"])
def test_plain_sgd_schedule_uses_fused_update(small_datasets, monkeypatch, schedule):
    # Without momentum and alpha, train_step folds the SGD update into the
    # compiled backward pass and reads optimizer.lr at every step, so
    # SGD.step must never run. A rate cached from an earlier step would make
    # the weights differ from scikit-learn's.
    from nnback.layers import Sequential
    from nnback.optim import SGD

    def fail(*args, **kwargs):
        raise AssertionError("the training step did not use the fused SGD update")

    monkeypatch.setattr(SGD, "step", fail)
    monkeypatch.setattr(Sequential, "forward", fail)
    monkeypatch.setattr(Sequential, "backward", fail)
    X, y = small_datasets["digits"]
    shared = dict(
        SCHEDULE_SETTINGS[schedule, False], hidden_layer_sizes=(12, 7), solver="sgd",
        learning_rate=schedule, momentum=0.0, alpha=0.0, random_state=3,
    )

    ours = MLPClassifier(dtype=np.float64, **shared).fit(X, y)
    theirs = SklearnMLPClassifier(**shared).fit(X, y)

    assert_same_fit(ours, theirs)
    assert ours._optimizer.lr == pytest.approx(final_learning_rate(theirs), rel=1e-15)
    assert ours._optimizer.lr < shared["learning_rate_init"]


@pytest.mark.parametrize("schedule", ["invscaling", "adaptive"])
def test_adam_ignores_schedule(small_datasets, schedule):
    X, y = small_datasets["digits"]
    shared = dict(hidden_layer_sizes=(12,), tol=0.05, n_iter_no_change=1, max_iter=30, random_state=3)

    constant = MLPClassifier(dtype=np.float64, **shared).fit(X, y)
    scheduled = MLPClassifier(dtype=np.float64, learning_rate=schedule, power_t=2.0, **shared).fit(X, y)
    theirs = SklearnMLPClassifier(learning_rate=schedule, power_t=2.0, **shared).fit(X, y)

    assert scheduled.n_iter_ < 30
    assert scheduled.n_iter_ == constant.n_iter_
    for mine, reference in zip(scheduled.coefs_, constant.coefs_):
        np.testing.assert_array_equal(mine, reference)
    assert_same_fit(scheduled, theirs)


def test_invscaling_rate_underflow(blobs):
    # (t + 1) ** power_t overflows the float range after the first epoch, so the
    # rate becomes 0 and later epochs leave the weights unchanged.
    X, y = blobs
    shared = dict(
        hidden_layer_sizes=(6,), solver="sgd", learning_rate="invscaling", power_t=200.0,
        learning_rate_init=0.1, alpha=0.0, dtype=np.float64, random_state=0,
    )

    one_epoch = MLPClassifier(max_iter=1, **shared).fit(X, y)
    three_epochs = MLPClassifier(max_iter=3, **shared).fit(X, y)

    assert three_epochs._optimizer.lr == 0.0
    for mine, reference in zip(three_epochs.coefs_ + three_epochs.intercepts_,
                               one_epoch.coefs_ + one_epoch.intercepts_):
        np.testing.assert_array_equal(mine, reference)
    assert all(np.isfinite(velocity).all() for velocity in three_epochs._optimizer.velocity)


def test_sklearn_parameters_transfer():
    sklearn_params = SklearnMLPClassifier(
        solver="sgd", learning_rate="adaptive", power_t=0.25, max_fun=100
    ).get_params()

    clf = MLPClassifier(**sklearn_params)

    assert set(sklearn_params) <= set(clf.get_params())
    for name, value in sklearn_params.items():
        assert clf.get_params()[name] == value, name
    clf.set_params(max_fun=20, learning_rate="invscaling")
    assert (clf.max_fun, clf.learning_rate) == (20, "invscaling")


def test_adam_epsilon_placement_matches_sklearn():
    # scikit-learn's update: param -= lr * sqrt(1 - b2**t) / (1 - b1**t) * m / (sqrt(s) + eps).
    # A large epsilon makes its placement visible.
    from nnback.estimator import _ScikitLearnAdam
    from nnback.layers import Parameter

    lr, beta_1, beta_2, epsilon = 0.1, 0.8, 0.9, 0.5
    gradients = [np.array([0.3, -2.0]), np.array([1.5, 0.25]), np.array([-0.7, 0.0])]
    parameter = Parameter(np.array([1.0, -1.0]))
    optimizer = _ScikitLearnAdam([parameter], lr=lr, betas=(beta_1, beta_2), epsilon=epsilon)
    expected = np.array([1.0, -1.0])
    m = np.zeros(2)
    s = np.zeros(2)

    for t, gradient in enumerate(gradients, start=1):
        parameter.grad[...] = gradient
        optimizer.step()
        m = beta_1 * m + (1 - beta_1) * gradient
        s = beta_2 * s + (1 - beta_2) * gradient**2
        step = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        expected = expected - step * m / (np.sqrt(s) + epsilon)
        np.testing.assert_allclose(parameter.data, expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize(
    "params",
    [dict(solver="adam", alpha=1e-4), dict(solver="adam", alpha=0.0),
     dict(solver="sgd", alpha=1e-4), dict(solver="sgd", momentum=0.0, alpha=1e-4),
     dict(solver="sgd", momentum=0.0, alpha=0.0)],
    ids=["adam-alpha", "adam", "sgd-alpha", "plain-sgd-alpha", "plain-sgd"],
)
def test_training_uses_compiled_step(blobs, monkeypatch, params):
    # train_step falls back to Sequential.forward and backward only when the
    # compiled chain cannot run the model, so a fit must never call them.
    from nnback.layers import Sequential

    def fail(*args, **kwargs):
        raise AssertionError("the training step left the compiled path")

    monkeypatch.setattr(Sequential, "forward", fail)
    monkeypatch.setattr(Sequential, "backward", fail)
    X, y = blobs

    clf = MLPClassifier(hidden_layer_sizes=(8, 4), max_iter=3, random_state=0, **params).fit(X, y)

    assert clf.n_iter_ == 3


# ---------------------------------------------------------------------------
# Training semantics: loss, penalty, stopping
# ---------------------------------------------------------------------------


def forward_logits(clf, X):
    """Logits of the fitted network in float64, from coefs_ and intercepts_."""
    activation = {
        "relu": lambda a: np.maximum(a, 0),
        "tanh": np.tanh,
        "logistic": lambda a: 1 / (1 + np.exp(-a)),
        "identity": lambda a: a,
    }[clf.activation]
    a = X.astype(np.float64)
    n_layers = len(clf.coefs_)
    for index, (W, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
        a = a @ W.astype(np.float64) + b
        if index < n_layers - 1:
            a = activation(a)
    return a


def penalized_loss(clf, X, y_index, alpha):
    z = forward_logits(clf, X)
    z_max = z.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(z - z_max).sum(axis=1)) + z_max[:, 0]
    data_loss = np.mean(log_sum - z[np.arange(len(z)), y_index])
    squared = sum(np.sum(W.astype(np.float64) ** 2) for W in clf.coefs_)
    return data_loss + alpha / (2 * len(X)) * squared


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_loss_includes_l2_penalty(blobs, solver):
    # One full batch and a negligible learning rate: the recorded loss is the
    # loss of the weights that the fit returns.
    X, y = blobs
    alpha = 3.0
    clf = MLPClassifier(
        hidden_layer_sizes=(6,), solver=solver, alpha=alpha, batch_size=len(X),
        learning_rate_init=1e-12, max_iter=1, shuffle=False, random_state=0, dtype=np.float64,
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)

    np.testing.assert_allclose(clf.loss_curve_[0], penalized_loss(clf, X, y, alpha), rtol=1e-9)


def test_penalty_gradient_on_weights_not_biases(blobs):
    X, y = blobs
    n_samples, alpha, learning_rate = len(X), 5.0, 0.1
    clf = MLPClassifier(
        hidden_layer_sizes=(6,), solver="sgd", momentum=0.0, alpha=alpha, batch_size=n_samples,
        learning_rate_init=learning_rate, max_iter=1, shuffle=False, random_state=0,
        dtype=np.float64,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    W1, W2 = (W.copy() for W in clf.coefs_)
    b1, b2 = (b.copy() for b in clf.intercepts_)

    # Gradient of the mean cross-entropy at the current weights, by hand.
    hidden_in = X @ W1 + b1
    hidden = np.maximum(hidden_in, 0)
    z = hidden @ W2 + b2
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    dz = (p - np.eye(3)[y]) / n_samples
    dW2 = hidden.T @ dz
    db2 = dz.sum(axis=0)
    dhidden = (dz @ W2.T) * (hidden_in > 0)
    dW1 = X.T @ dhidden
    db1 = dhidden.sum(axis=0)

    clf.partial_fit(X, y)

    np.testing.assert_allclose(clf.coefs_[0], W1 - learning_rate * (dW1 + alpha * W1 / n_samples), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(clf.coefs_[1], W2 - learning_rate * (dW2 + alpha * W2 / n_samples), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(clf.intercepts_[0], b1 - learning_rate * db1, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(clf.intercepts_[1], b2 - learning_rate * db2, rtol=1e-10, atol=1e-12)


def test_training_attributes(blobs):
    X, y = blobs
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=15, tol=0.0, random_state=0)

    with pytest.warns(ConvergenceWarning, match="max_iter=15"):
        clf.fit(X, y)

    assert clf.n_iter_ == 15
    assert clf.t_ == 15 * len(X)
    assert len(clf.loss_curve_) == 15
    assert clf.loss_ == clf.loss_curve_[-1]
    assert clf.best_loss_ == min(clf.loss_curve_)
    assert clf.validation_scores_ is None
    assert clf.best_validation_score_ is None
    assert clf.n_features_in_ == 4
    assert clf.n_layers_ == 3
    assert clf.out_activation_ == "softmax"
    assert [W.shape for W in clf.coefs_] == [(4, 8), (8, 3)]
    assert [b.shape for b in clf.intercepts_] == [(8,), (3,)]


def expected_stop_epoch(values, tol, n_iter_no_change, higher_is_better):
    """Return the epoch (1-based) at which scikit-learn's rule stops, or None."""
    best = -np.inf if higher_is_better else np.inf
    count = 0
    for epoch, value in enumerate(values, start=1):
        if higher_is_better:
            count = count + 1 if value < best + tol else 0
            best = max(best, value)
        else:
            count = count + 1 if value > best - tol else 0
            best = min(best, value)
        if count > n_iter_no_change:
            return epoch
    return None


def test_stops_when_loss_stalls(blobs):
    X, y = blobs
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=500, tol=0.05, n_iter_no_change=3, random_state=0)

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf.fit(X, y)

    assert clf.n_iter_ < 500
    assert clf.n_iter_ == expected_stop_epoch(clf.loss_curve_, 0.05, 3, higher_is_better=False)


def test_early_stopping_scores_and_best_weights(blobs):
    X, y = blobs
    clf = MLPClassifier(
        hidden_layer_sizes=(8,), max_iter=300, early_stopping=True, validation_fraction=0.25,
        n_iter_no_change=4, random_state=0,
    )

    clf.fit(X, y)

    assert clf.best_loss_ is None
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.n_iter_ == expected_stop_epoch(clf.validation_scores_, 1e-4, 4, higher_is_better=True)
    for parameter, best in zip(clf.model_.parameters(), clf._best_parameters):
        np.testing.assert_array_equal(parameter.data, best)


def test_early_stopping_validation_too_small():
    X = np.arange(20, dtype=float).reshape(10, 2)
    y = np.array([0, 1] * 5)
    clf = MLPClassifier(early_stopping=True, validation_fraction=0.1)

    with pytest.raises(ValueError, match="test_size = 1 should be greater or equal to the number of classes"):
        clf.fit(X, y)


def test_batch_size_larger_than_samples_warns(blobs):
    X, y = blobs
    clf = MLPClassifier(hidden_layer_sizes=(4,), batch_size=1000, max_iter=2)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.warns(UserWarning, match="batch_size=1000"):
            clf.fit(X, y)


def test_same_random_state_same_model(blobs):
    X, y = blobs
    params = dict(hidden_layer_sizes=(8,), max_iter=10, random_state=7)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        first = MLPClassifier(**params).fit(X, y)
        second = MLPClassifier(**params).fit(X, y)

    assert first.loss_curve_ == second.loss_curve_
    np.testing.assert_array_equal(first.coefs_[0], second.coefs_[0])


def test_warm_start_continues(blobs):
    X, y = blobs
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, tol=0.0, warm_start=True, random_state=0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
        first_weights = clf.coefs_[0].copy()
        first_curve = list(clf.loss_curve_)
        clf.fit(X, y)

    assert len(clf.loss_curve_) == 10
    assert clf.loss_curve_[:5] == first_curve
    assert not np.array_equal(clf.coefs_[0], first_weights)


# ---------------------------------------------------------------------------
# partial_fit
# ---------------------------------------------------------------------------


def test_partial_fit_epochs(blobs):
    X, y = blobs
    clf = MLPClassifier(hidden_layer_sizes=(8,), random_state=0)

    clf.partial_fit(X[:60], y[:60], classes=[0, 1, 2])
    clf.partial_fit(X[60:], y[60:])

    assert clf.n_iter_ == 1
    assert clf.t_ == 120
    assert len(clf.loss_curve_) == 2
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])


def test_partial_fit_classes_required():
    with pytest.raises(ValueError, match="classes is None on the first call"):
        MLPClassifier().partial_fit(np.zeros((3, 2)), [0, 1, 0])


def test_partial_fit_unknown_label(blobs):
    X, y = blobs
    clf = MLPClassifier(hidden_layer_sizes=(4,)).partial_fit(X, y, classes=[0, 1, 2])

    with pytest.raises(ValueError, match=r"labels \[5\], which are not in classes"):
        clf.partial_fit(X[:3], [0, 5, 1])


def test_partial_fit_changed_classes(blobs):
    X, y = blobs
    clf = MLPClassifier(hidden_layer_sizes=(4,)).partial_fit(X, y, classes=[0, 1, 2])

    with pytest.raises(ValueError, match="differs from the classes"):
        clf.partial_fit(X, y, classes=[0, 1, 2, 3])


def test_partial_fit_rejects_early_stopping(blobs):
    X, y = blobs

    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])


def test_partial_fit_subset_of_classes(blobs):
    X, y = blobs
    clf = MLPClassifier(hidden_layer_sizes=(4,), random_state=0)

    clf.partial_fit(X[y != 2], y[y != 2], classes=[0, 1, 2])

    assert clf.predict_proba(X).shape == (120, 3)


# ---------------------------------------------------------------------------
# Pickling
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("solver, alpha", [("adam", 1e-4), ("sgd", 1e-4), ("adam", 0.0)])
def test_pickle_keeps_training_state(blobs, solver, alpha):
    X, y = blobs
    clf = MLPClassifier(
        hidden_layer_sizes=(8,), solver=solver, alpha=alpha, random_state=0, shuffle=False,
    ).partial_fit(X, y, classes=[0, 1, 2])

    restored = pickle.loads(pickle.dumps(clf))

    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    clf.partial_fit(X, y)
    restored.partial_fit(X, y)
    for ours, theirs in zip(clf.coefs_ + clf.intercepts_, restored.coefs_ + restored.intercepts_):
        np.testing.assert_array_equal(theirs, ours)


# ---------------------------------------------------------------------------
# Parameter validation
# ---------------------------------------------------------------------------


INVALID_PARAMETERS = [
    ("hidden_zero", dict(hidden_layer_sizes=(10, 0)), "hidden_layer_sizes"),
    ("hidden_float", dict(hidden_layer_sizes=(2.5,)), "hidden_layer_sizes"),
    ("activation", dict(activation="softplus"), "activation"),
    ("solver_lbfgs", dict(solver="lbfgs"), "solver"),
    ("alpha_negative", dict(alpha=-1.0), "alpha"),
    ("batch_size_zero", dict(batch_size=0), "batch_size"),
    ("batch_size_text", dict(batch_size="all"), "batch_size"),
    ("learning_rate_zero", dict(learning_rate_init=0.0), "learning_rate_init"),
    ("schedule_unknown", dict(learning_rate="optimal"), "learning_rate"),
    ("schedule_number", dict(learning_rate=0.1), "learning_rate"),
    ("power_t_negative", dict(power_t=-0.5), "power_t"),
    ("power_t_text", dict(power_t="half"), "power_t"),
    ("power_t_infinite", dict(power_t=np.inf), "power_t"),
    ("max_fun_zero", dict(max_fun=0), "max_fun"),
    ("max_fun_float", dict(max_fun=1.5), "max_fun"),
    ("max_iter_zero", dict(max_iter=0), "max_iter"),
    ("tol_negative", dict(tol=-1e-3), "tol"),
    ("momentum_one", dict(momentum=1.0), "momentum"),
    ("validation_fraction_one", dict(validation_fraction=1.0), "validation_fraction"),
    ("beta_1_one", dict(beta_1=1.0), "beta_1"),
    ("beta_2_negative", dict(beta_2=-0.1), "beta_2"),
    ("epsilon_zero", dict(epsilon=0.0), "epsilon"),
    ("n_iter_no_change_zero", dict(n_iter_no_change=0), "n_iter_no_change"),
    ("dtype_float16", dict(dtype=np.float16), "dtype"),
    ("dtype_text", dict(dtype="double precision"), "dtype"),
    ("dtype_none", dict(dtype=None), "dtype"),
]


@pytest.mark.parametrize(
    "params, name", [case[1:] for case in INVALID_PARAMETERS], ids=[case[0] for case in INVALID_PARAMETERS]
)
def test_invalid_parameter(blobs, params, name):
    X, y = blobs

    with pytest.raises(ValueError, match=name):
        MLPClassifier(**params).fit(X, y)


def test_n_iter_no_change_infinite(blobs):
    X, y = blobs
    clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=12, n_iter_no_change=np.inf, tol=1.0)

    with pytest.warns(ConvergenceWarning):
        clf.fit(X, y)

    assert clf.n_iter_ == 12
