"""Fault tests: non-finite losses, Ctrl-C in ``nnback train``, and processes killed while saving.

The subprocess tests start ``python -m nnback`` or a small script and signal it
once it has written a line that marks the moment to interrupt. Others run a
script that sends SIGINT to itself at one exact point. So no test depends on
how long a step takes. SIGINT is reset to its default action in each child,
because a shell starts background jobs with SIGINT ignored and a child
inherits that.
"""

import errno
import io
import math
import os
import pickle
import re
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest

import nnback
from nnback import _files, cli, datasets, serialization, training
from nnback.layers import mlp
from nnback.serialization import load, save
from nnback.training import NonFiniteLossError

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(nnback.__file__)))
TEMPORARY_NAME = re.compile(r"\.nnback-[0-9a-f]{16}\.tmp")


def child_environment():
    environment = dict(os.environ)
    environment["PYTHONPATH"] = PACKAGE_ROOT
    return environment


def reset_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def temporary_files(directory):
    names = os.listdir(directory)
    return sorted(name for name in names if name.startswith(_files.TEMPORARY_PREFIX))


def nan_after(real_function, failing_calls):
    """Wrap a train_step so that the calls numbered in ``failing_calls`` (from 0) return NaN.

    The real step still runs, so the weights stay finite and only the
    reported loss is non-finite.
    """
    calls = []

    def train_step(*args, **kwargs):
        value = real_function(*args, **kwargs)
        calls.append(value)
        return math.nan if len(calls) - 1 in failing_calls else value

    return train_step


# ---------------------------------------------------------------------------
# NonFiniteLossError
# ---------------------------------------------------------------------------


def test_nonfinite_error_types_and_pickle():
    error = NonFiniteLossError("the loss of batch 3 in epoch 2 is nan", 2, 3, math.nan)

    assert isinstance(error, FloatingPointError)
    assert isinstance(error, ValueError)
    assert nnback.NonFiniteLossError is NonFiniteLossError
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error)
    assert (copy.epoch, copy.batch) == (2, 3)
    assert math.isnan(copy.loss)


def test_train_step_returns_nonfinite_loss():
    model = mlp([2, 3, 2], dtype=np.float64, rng=0)
    model.layers[0].weight.data[0, 0] = np.inf
    optimizer = nnback.SGD(model.parameters(), lr=0.1)
    x = np.array([[1.0, 0.0], [0.0, 1.0]])

    value = training.train_step(model, nnback.SoftmaxCrossEntropy(), optimizer, x, np.array([0, 1]))

    assert not math.isfinite(value)


# ---------------------------------------------------------------------------
# MLPClassifier: on_nonfinite
# ---------------------------------------------------------------------------


@pytest.fixture
def blobs():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    return X, y


def small_classifier(**params):
    from nnback.estimator import MLPClassifier

    settings = dict(hidden_layer_sizes=(5,), batch_size=10, max_iter=4, random_state=0)
    settings.update(params)
    return MLPClassifier(**settings)


def caught_warnings(function):
    """Call ``function`` and return its warnings other than ConvergenceWarning."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        function()
    return [w for w in caught if not issubclass(w.category, ConvergenceWarning)]


def test_estimator_on_nonfinite_default():
    assert small_classifier().get_params()["on_nonfinite"] == "raise"


def test_estimator_raises_at_nonfinite_batch(blobs, monkeypatch):
    from nnback import estimator

    X, y = blobs
    # Five batches of 10 per epoch, so call 7 (from 0) is batch 3 of epoch 2.
    monkeypatch.setattr(estimator, "train_step", nan_after(estimator.train_step, {7}))
    classifier = small_classifier()

    expected = r"batch 3 in epoch 2 \(both counted from 1\) is nan"
    with pytest.raises(NonFiniteLossError, match=expected) as info:
        classifier.fit(X, y)

    assert (info.value.epoch, info.value.batch) == (2, 3)
    assert math.isnan(info.value.loss)
    assert "on_nonfinite" in str(info.value)
    assert classifier.n_iter_ == 1
    assert len(classifier.loss_curve_) == 1


def test_estimator_diverging_fit_raises(blobs):
    X, y = blobs
    classifier = small_classifier(solver="sgd", learning_rate_init=1e6, max_iter=50)

    with pytest.raises(ValueError, match="counted from 1") as info:
        classifier.fit(X * 1e6, y)

    assert isinstance(info.value, NonFiniteLossError)
    assert info.value.epoch >= 1
    assert 1 <= info.value.batch <= 5


def test_estimator_warn_reports_first_only(blobs, monkeypatch):
    from nnback import estimator

    X, y = blobs
    monkeypatch.setattr(estimator, "train_step", nan_after(estimator.train_step, {2, 3, 11}))
    classifier = small_classifier(on_nonfinite="warn")

    caught = caught_warnings(lambda: classifier.fit(X, y))

    assert [w.category for w in caught] == [RuntimeWarning]
    assert "batch 3 in epoch 1" in str(caught[0].message)
    assert caught[0].filename == __file__
    assert classifier.n_iter_ == 4
    assert math.isnan(classifier.loss_curve_[0])
    assert math.isnan(classifier.loss_curve_[2])


def test_estimator_ignore_trains_on_silently(blobs, monkeypatch):
    from nnback import estimator

    X, y = blobs
    monkeypatch.setattr(estimator, "train_step", nan_after(estimator.train_step, {0}))
    classifier = small_classifier(on_nonfinite="ignore")

    caught = caught_warnings(lambda: classifier.fit(X, y))

    assert caught == []
    assert classifier.n_iter_ == 4
    assert math.isnan(classifier.loss_curve_[0])
    assert math.isfinite(classifier.loss_curve_[1])


@pytest.mark.parametrize(
    "action, expected",
    [("raise", ValueError), ("warn", RuntimeWarning), ("ignore", None)],
)
def test_estimator_nonfinite_weights(blobs, monkeypatch, action, expected):
    from sklearn.exceptions import ConvergenceWarning

    from nnback import estimator

    X, y = blobs
    real_step = estimator.train_step
    calls = []

    # The last step of the fit makes a weight infinite after its loss is known.
    def poisoning_step(model, *args):
        value = real_step(model, *args)
        calls.append(value)
        if len(calls) == 20:
            model.layers[0].weight.data[0, 0] = np.inf
        return value

    monkeypatch.setattr(estimator, "train_step", poisoning_step)
    classifier = small_classifier(on_nonfinite=action)

    if expected is ValueError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            with pytest.raises(ValueError, match="non-finite weights"):
                classifier.fit(X, y)
        return
    caught = caught_warnings(lambda: classifier.fit(X, y))
    assert [w.category for w in caught] == ([expected] if expected else [])


def test_estimator_partial_fit_raises(blobs, monkeypatch):
    from nnback import estimator

    X, y = blobs
    monkeypatch.setattr(estimator, "train_step", nan_after(estimator.train_step, {4}))
    classifier = small_classifier()

    with pytest.raises(NonFiniteLossError) as info:
        classifier.partial_fit(X, y, classes=[0, 1])

    assert (info.value.epoch, info.value.batch) == (1, 5)


@pytest.mark.parametrize("value", ["stop", "RAISE", None, 1, ["raise"]])
def test_estimator_invalid_on_nonfinite(blobs, value):
    X, y = blobs

    expected = r"on_nonfinite must be one of \('raise', 'warn', 'ignore'\)"
    with pytest.raises(ValueError, match=expected):
        small_classifier(on_nonfinite=value).fit(X, y)


def test_estimator_clone_keeps_on_nonfinite():
    from sklearn.base import clone

    assert clone(small_classifier(on_nonfinite="warn")).on_nonfinite == "warn"


# ---------------------------------------------------------------------------
# nnback train: non-finite losses
# ---------------------------------------------------------------------------


@pytest.fixture
def small_npz(tmp_path):
    """Return an .npz with 50 training samples of 4 features and 3 classes."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((70, 4)).astype(np.float32)
    y = np.argmax(x[:, :3], axis=1).astype(np.int64)
    path = tmp_path / "small.npz"
    np.savez(path, x_train=x[:50], y_train=y[:50], x_test=x[50:], y_test=y[50:])
    return path


def train_arguments(data, *extra):
    return [
        "train", "--data", str(data), "--hidden", "8", "--batch-size", "10", "--epochs", "3",
        *extra,
    ]


def test_cli_stops_at_nonfinite_loss(capsys, tmp_path, small_npz, monkeypatch):
    monkeypatch.setattr(training, "train_step", nan_after(training.train_step, {7}))
    path = tmp_path / "model.npz"

    status = cli.main(train_arguments(small_npz, "--save", str(path)))

    assert status == cli.EXIT_FAILURE
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("epoch 1/3 ")
    assert lines[1] == (
        f"nnback: error: the loss of batch 3 in epoch 2 (both counted from 1) is nan: lower "
        f"the learning rate (--lr) or scale the features, or pass --on-nonfinite continue; "
        f"nothing was saved to {path}"
    )
    assert len(lines) == 2
    assert not path.exists()


def test_cli_stop_keeps_checkpoint(capsys, tmp_path, small_npz, monkeypatch):
    monkeypatch.setattr(training, "train_step", nan_after(training.train_step, {12}))
    path = tmp_path / "model.npz"

    status = cli.main(train_arguments(small_npz, "--save", str(path), "--checkpoint"))

    assert status == cli.EXIT_FAILURE
    message = capsys.readouterr().err.splitlines()[-1]
    assert "batch 3 in epoch 3" in message
    assert message.endswith(f"; {path} holds the model after epoch 2")
    assert load(path).feature_sizes == (4, 3)
    assert temporary_files(tmp_path) == []


def test_cli_continue_warns_once(capsys, tmp_path, small_npz, monkeypatch):
    monkeypatch.setattr(training, "train_step", nan_after(training.train_step, {1, 2, 9}))
    path = tmp_path / "model.npz"

    status = cli.main(train_arguments(small_npz, "--save", str(path), "--on-nonfinite", "continue"))

    assert status == 0
    lines = capsys.readouterr().err.splitlines()
    warning_lines = [line for line in lines if line.startswith("nnback: warning:")]
    assert warning_lines == [
        "nnback: warning: the loss of batch 2 in epoch 1 (both counted from 1) is nan. "
        "Training goes on because of --on-nonfinite continue, and later non-finite losses "
        "are not reported"
    ]
    assert lines[0] == warning_lines[0]
    assert " loss nan " in lines[1]
    assert lines[-1] == f"saved the model to {path}"
    assert load(path).feature_sizes == (4, 3)


def test_cli_diverging_run_exits_1(tmp_path):
    process = subprocess.run(
        [
            sys.executable, "-m", "nnback", "train",
            "--optimizer", "sgd", "--lr", "1e6", "--epochs", "2",
        ],
        cwd=tmp_path, env=child_environment(), capture_output=True, text=True,
    )

    assert process.returncode == 1
    assert process.stdout == ""
    [line] = process.stderr.splitlines()
    assert re.fullmatch(
        r"nnback: error: the loss of batch \d+ in epoch [12] \(both counted from 1\) is (nan|inf)"
        r": lower the learning rate \(--lr\) or scale the features, or pass "
        r"--on-nonfinite continue",
        line,
    ), line


def test_cli_checkpoint_needs_save(capsys, small_npz):
    status = cli.main(train_arguments(small_npz, "--checkpoint"))

    assert status == cli.EXIT_USAGE
    assert capsys.readouterr().err == (
        "nnback: error: --checkpoint needs --save PATH, the file that it writes\n"
    )


@pytest.fixture
def restore_sigint_handler():
    """Restore the SIGINT handler that cli.main leaves ignored after an interrupt."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


@pytest.mark.usefixtures("restore_sigint_handler")
def test_cli_interrupt_in_save_keeps_file(capsys, tmp_path, small_npz, monkeypatch):
    path = tmp_path / "model.npz"
    save(mlp([4, 2, 3], rng=5), path)
    old_bytes = path.read_bytes()

    def interrupted_replace(source, destination):
        raise KeyboardInterrupt

    monkeypatch.setattr(_files.os, "replace", interrupted_replace)
    status = cli.main(train_arguments(small_npz, "--save", str(path)))

    assert status == cli.EXIT_INTERRUPTED
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line == f"nnback: interrupted; nothing was saved to {path}"
    assert path.read_bytes() == old_bytes
    assert temporary_files(tmp_path) == []


def test_progress_bar_ends_line_before_message():
    stream = io.StringIO()
    stream.isatty = lambda: True
    progress = cli.ProgressBar(2, stream)

    progress.update(1, 0.5, 1.25)
    progress.write_line("nnback: warning: text")
    progress.end_line()

    assert stream.getvalue() == (
        "\repoch 1/2 [#####...............] loss 1.2500\nnnback: warning: text\n"
    )


# ---------------------------------------------------------------------------
# nnback train: SIGINT in a real process
# ---------------------------------------------------------------------------


@pytest.fixture
def slow_npz(tmp_path):
    """Return an .npz of 4000 training samples, 64 features, 4 classes: 1000 epochs take seconds."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4200, 64)).astype(np.float32)
    y = np.argmax(x[:, :4], axis=1).astype(np.int64)
    path = tmp_path / "slow.npz"
    np.savez(path, x_train=x[:4000], y_train=y[:4000], x_test=x[4000:], y_test=y[4000:])
    return path


SLOW_TRAINING = ["--hidden", "32", "--epochs", "1000", "--threads", "1", "--seed", "4"]


def interrupt_after_first_epoch(tmp_path, arguments):
    """Run ``nnback train`` and send SIGINT after its first progress line.

    Returns (exit status, stdout, stderr).
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "nnback", "train", *arguments],
        cwd=tmp_path, env=child_environment(), preexec_fn=reset_sigint,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first_line = process.stderr.readline()
        assert first_line.startswith("epoch 1/1000 "), first_line + process.stderr.read()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stdout, stderr


def test_sigint_without_checkpoint_keeps_old_file(tmp_path, slow_npz):
    path = tmp_path / "model.npz"
    save(mlp([64, 2, 4], rng=6), path)
    old_bytes = path.read_bytes()

    status, stdout, stderr = interrupt_after_first_epoch(
        tmp_path, ["--data", str(slow_npz), *SLOW_TRAINING, "--save", str(path)]
    )

    assert status == 130
    assert stdout == ""
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == f"nnback: interrupted; nothing was saved to {path}"
    assert path.read_bytes() == old_bytes
    assert temporary_files(tmp_path) == []


def test_sigint_with_checkpoint_keeps_last_epoch(tmp_path, slow_npz):
    path = tmp_path / "model.npz"

    status, stdout, stderr = interrupt_after_first_epoch(
        tmp_path, ["--data", str(slow_npz), *SLOW_TRAINING, "--save", str(path), "--checkpoint"]
    )

    assert status == 130
    assert stdout == ""
    assert "Traceback" not in stderr
    match = re.fullmatch(
        rf"nnback: interrupted; {re.escape(str(path))} holds the model after epoch (\d+)",
        stderr.splitlines()[-1],
    )
    assert match, stderr
    saved_epoch = int(match.group(1))
    assert saved_epoch >= 1
    assert temporary_files(tmp_path) == []

    # The same run for saved_epoch epochs, without interruption, gives the saved weights.
    arguments = cli.build_parser().parse_args(
        ["train", *SLOW_TRAINING, "--data", str(slow_npz), "--epochs", str(saved_epoch)]
    )
    with nnback.threads(1):
        expected, _, _, _ = cli.train_model(
            arguments, datasets.load_dataset(slow_npz), cli.ProgressBar(saved_epoch, io.StringIO())
        )
    for loaded, reference in zip(load(path).parameters(), expected.parameters()):
        np.testing.assert_array_equal(loaded.data, reference.data)


# ---------------------------------------------------------------------------
# SIGINT outside the training loop
# ---------------------------------------------------------------------------

# Child scripts run ``python -m nnback`` through runpy, as the interpreter does,
# after arranging for a real SIGINT at one point of the run. Python raises the
# KeyboardInterrupt at the next bytecode after os.kill returns, so the point is
# exact. A KeyboardInterrupt that escapes the script ends the child by SIGINT
# (returncode -2), as it would end ``python -m nnback``.

INTERRUPT_DURING_CLI_IMPORT = """
import os, runpy, signal, sys

import nnback  # python -m nnback imports the package before nnback.__main__ runs


class InterruptingFinder:
    def find_spec(self, name, path=None, target=None):
        if name == "nnback.cli":
            os.kill(os.getpid(), signal.SIGINT)
        return None


sys.meta_path.insert(0, InterruptingFinder())
runpy.run_module("nnback", run_name="__main__", alter_sys=True)
"""

INTERRUPT_WHILE_LOADING = """
import os, runpy, signal, sys

from nnback import cli


class SecondInterrupt:
    # A stderr that sends SIGINT again right after the interrupt message, as a
    # second Ctrl-C would.
    def __init__(self, stream):
        self.stream = stream
        self.sent = False

    def write(self, text):
        count = self.stream.write(text)
        if "interrupted" in text and not self.sent:
            self.sent = True
            self.stream.flush()
            os.kill(os.getpid(), signal.SIGINT)
        return count

    def __getattr__(self, name):
        return getattr(self.stream, name)


def interrupted_loading(path):
    os.kill(os.getpid(), signal.SIGINT)
    raise AssertionError("SIGINT did not raise KeyboardInterrupt")


cli.datasets.load_dataset = interrupted_loading
cli.datasets.load_samples = interrupted_loading
if os.environ.get("SECOND_INTERRUPT") == "1":
    sys.stderr = SecondInterrupt(sys.stderr)
runpy.run_module("nnback", run_name="__main__", alter_sys=True)
"""


def run_child_script(script, arguments, cwd, extra_environment=None):
    """Run ``python -c script arguments`` with SIGINT at its default action; return the result."""
    environment = child_environment()
    environment.update(extra_environment or {})
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, arguments)],
        cwd=cwd, env=environment, preexec_fn=reset_sigint,
        capture_output=True, text=True,
    )


def test_sigint_during_cli_import_exits_130(tmp_path):
    result = run_child_script(INTERRUPT_DURING_CLI_IMPORT, ["--version"], tmp_path)

    assert result.returncode == 130, result.stderr
    assert result.stderr == "nnback: interrupted\n"
    assert result.stdout == ""


def test_sigint_before_first_epoch_names_save_file(tmp_path, small_npz):
    path = tmp_path / "ck3.npz"

    result = run_child_script(
        INTERRUPT_WHILE_LOADING,
        train_arguments(small_npz, "--save", path, "--checkpoint"),
        tmp_path,
    )

    assert result.returncode == 130, result.stderr
    assert result.stderr == f"nnback: interrupted; nothing was saved to {path}\n"
    assert not path.exists()


@pytest.mark.parametrize("command", ["train", "predict"])
def test_second_sigint_while_exiting_ignored(tmp_path, small_npz, command):
    if command == "train":
        arguments = train_arguments(small_npz)
    else:
        save(mlp([4, 8, 3], rng=1), tmp_path / "model.npz")
        arguments = ["predict", "--model", tmp_path / "model.npz", "--data", small_npz]

    result = run_child_script(
        INTERRUPT_WHILE_LOADING, arguments, tmp_path, {"SECOND_INTERRUPT": "1"}
    )

    assert result.returncode == 130, result.stderr
    assert result.stderr == "nnback: interrupted\n"


@pytest.mark.usefixtures("restore_sigint_handler")
def test_interrupt_while_parsing_exits_130(capsys, monkeypatch):
    # The console script calls cli.main directly, without nnback.__main__.
    def interrupted_parser():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted_parser)

    status = cli.main(["check"])

    assert status == cli.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "nnback: interrupted\n"
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN


# ---------------------------------------------------------------------------
# save: a process killed while writing
# ---------------------------------------------------------------------------


HALF_WRITE_SCRIPT = """
import io
import os
import sys

import numpy as np

from nnback.layers import mlp
from nnback.serialization import save

real_savez = np.savez


def half_savez(file, **entries):
    buffer = io.BytesIO()
    real_savez(buffer, **entries)
    data = buffer.getvalue()
    file.write(data[: len(data) // 2])
    file.flush()
    print("half written", flush=True)
    # Wait for SIGKILL. If the test closes stdin first, end without finishing the save.
    sys.stdin.read()
    os._exit(3)


np.savez = half_savez
save(mlp([200, 300, 10], rng=7), sys.argv[1])
"""


def test_sigkill_mid_write_keeps_old_file(tmp_path):
    path = tmp_path / "model.npz"
    old_model = mlp([4, 5, 3], rng=8)
    save(old_model, path)
    old_bytes = path.read_bytes()
    script = tmp_path / "half_write.py"
    script.write_text(HALF_WRITE_SCRIPT)

    process = subprocess.Popen(
        [sys.executable, str(script), str(path)],
        cwd=tmp_path, env=child_environment(),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout.readline() == "half written\n"
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == -signal.SIGKILL
    assert path.read_bytes() == old_bytes
    # SIGKILL leaves no chance to remove the temporary file, so exactly one
    # partial file with the documented name stays behind.
    [orphan] = temporary_files(tmp_path)
    assert TEMPORARY_NAME.fullmatch(orphan)
    assert (tmp_path / orphan).stat().st_size > 0
    assert sorted(os.listdir(tmp_path)) == sorted(["model.npz", "half_write.py", orphan])


SAVE_LOOP_SCRIPT = """
import sys

from nnback.layers import mlp
from nnback.serialization import save

path = sys.argv[1]
models = [mlp([256, 1024, 1024, 10], rng=seed) for seed in (11, 12)]
count = 0
while True:
    save(models[count % 2], path)
    count += 1
    print(count, flush=True)
"""


def test_sigkill_in_save_loop_keeps_file(tmp_path):
    path = tmp_path / "model.npz"
    script = tmp_path / "save_loop.py"
    script.write_text(SAVE_LOOP_SCRIPT)
    expected = [mlp([256, 1024, 1024, 10], rng=seed) for seed in (11, 12)]
    save(expected[1], path)
    rng = np.random.default_rng(9)
    orphans = set()

    for _ in range(4):
        process = subprocess.Popen(
            [sys.executable, str(script), str(path)],
            cwd=tmp_path, env=child_environment(), stdout=subprocess.PIPE, text=True,
        )
        try:
            # After the first completed save, kill at a varying number of
            # finished saves, at whatever point the next one has reached.
            for _ in range(int(rng.integers(1, 4))):
                assert process.stdout.readline() != ""
            process.send_signal(signal.SIGKILL)
            process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

        loaded = load(path)
        matches = [
            all(
                np.array_equal(mine.data, theirs.data)
                for mine, theirs in zip(loaded.parameters(), model.parameters())
            )
            for model in expected
        ]
        assert matches.count(True) == 1
        new_orphans = set(temporary_files(tmp_path)) - orphans
        assert len(new_orphans) <= 1
        assert all(TEMPORARY_NAME.fullmatch(name) for name in new_orphans)
        orphans |= new_orphans

    assert sorted(os.listdir(tmp_path)) == sorted(["model.npz", "save_loop.py", *orphans])


# ---------------------------------------------------------------------------
# save: write errors
# ---------------------------------------------------------------------------


class FullDisk:
    """A file wrapper whose writes fail with ENOSPC once they would exceed ``capacity`` bytes."""

    def __init__(self, file, capacity):
        self._file = file
        self._remaining = capacity

    def write(self, data):
        if len(data) > self._remaining:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._remaining -= len(data)
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)


@pytest.mark.parametrize("capacity", [0, 100, 5000])
def test_disk_full_keeps_old_file(tmp_path, monkeypatch, capacity):
    path = tmp_path / "model.npz"
    save(mlp([4, 5, 3], rng=1), path)
    old_bytes = path.read_bytes()
    real_savez = np.savez
    def savez_to_full_disk(file, **entries):
        real_savez(FullDisk(file, capacity), **entries)

    monkeypatch.setattr(np, "savez", savez_to_full_disk)

    with pytest.raises(OSError) as info:
        save(mlp([40, 50, 3], rng=2), path)

    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == old_bytes
    assert os.listdir(tmp_path) == ["model.npz"]


def test_fsync_error_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    save(mlp([4, 5, 3], rng=1), path)
    old_bytes = path.read_bytes()

    def failing_fsync(descriptor):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(_files.os, "fsync", failing_fsync)
    with pytest.raises(OSError) as info:
        serialization.save(mlp([4, 5, 3], rng=2), path)

    assert info.value.errno == errno.EIO
    assert path.read_bytes() == old_bytes
    assert os.listdir(tmp_path) == ["model.npz"]


def test_cli_save_error_is_one_line(capsys, tmp_path, small_npz, monkeypatch):
    path = tmp_path / "model.npz"
    real_savez = np.savez
    def savez_to_full_disk(file, **entries):
        real_savez(FullDisk(file, 10), **entries)

    monkeypatch.setattr(np, "savez", savez_to_full_disk)

    status = cli.main(train_arguments(small_npz, "--save", str(path)))

    assert status == cli.EXIT_USAGE
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"nnback: error: --save {path}: saving the model failed: No space left on device; "
        f"nothing was saved to {path}"
    )
    assert os.listdir(tmp_path) == ["small.npz"]
