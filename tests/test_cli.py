"""End-to-end tests of the nnback command line: train, predict and every error path.

The training runs start ``python -m nnback`` in a subprocess, from a temporary
working directory, with PYTHONPATH pointing at the nnback package that the
tests import (an in-place build or an installed copy).
"""

import gzip
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

import nnback
from nnback import cli, datasets
from nnback.serialization import load

ACCURACY_LINE = re.compile(r"^test accuracy: (\d{1,3}\.\d)%$", re.MULTILINE)
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+) \[[#.]{20}\] loss \d+\.\d{4} test acc \d+\.\d%$")

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(nnback.__file__)))


def run_nnback(args, cwd, extra_path=()):
    """Run ``python -m nnback ARGS`` in ``cwd`` and return the completed process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, extra_path), PACKAGE_ROOT])
    return subprocess.run(
        [sys.executable, "-m", "nnback", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )


def parse_accuracy(stdout):
    matches = ACCURACY_LINE.findall(stdout)
    assert len(matches) == 1, stdout
    return float(matches[0])


def assert_one_line_error(stderr, *fragments):
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("nnback: error: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0]


# ---------------------------------------------------------------------------
# Synthetic data sets
# ---------------------------------------------------------------------------


def make_images(n_samples, rng, n_classes=3, size=6):
    """Return uint8 images (n, size, size) whose bright row band identifies the class."""
    labels = rng.integers(0, n_classes, size=n_samples).astype(np.uint8)
    images = rng.integers(0, 60, size=(n_samples, size, size)).astype(np.uint8)
    band = size // n_classes
    for index, label in enumerate(labels):
        rows = slice(label * band, (label + 1) * band)
        images[index, rows, :] = rng.integers(200, 256, size=(band, size))
    return images, labels


def write_idx(path, array, compress):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as file:
        file.write(data)


@pytest.fixture
def mnist_folder(tmp_path):
    """Return a folder with the four MNIST files of a 3-class problem, two of them gzipped."""
    rng = np.random.default_rng(0)
    x_train, y_train = make_images(240, rng)
    x_test, y_test = make_images(60, rng)
    folder = tmp_path / "mnist"
    folder.mkdir()
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    for key, name in datasets.MNIST_FILES.items():
        compress = key in ("x_train", "y_test")
        write_idx(folder / (name + (".gz" if compress else "")), arrays[key], compress)
    return folder


@pytest.fixture
def npz_path(tmp_path):
    """Return the path of an .npz with float features of a 3-class problem."""
    rng = np.random.default_rng(1)
    x_train, y_train = make_images(240, rng)
    x_test, y_test = make_images(60, rng)
    path = tmp_path / "data.npz"
    np.savez(
        path,
        x_train=x_train.reshape(240, -1) / 255.0,
        y_train=y_train.astype(np.int64),
        x_test=x_test.reshape(60, -1) / 255.0,
        y_test=y_test.astype(np.int64),
    )
    return path


# ---------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------


def test_train_digits_few_epochs(tmp_path):
    pytest.importorskip("sklearn")
    result = run_nnback(["train", "--epochs", "3", "--hidden", "64"], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert parse_accuracy(result.stdout) > 80.0
    epoch_lines = result.stderr.splitlines()[:3]
    assert [EPOCH_LINE.match(line) is not None for line in epoch_lines] == [True] * 3
    assert epoch_lines[-1].startswith("epoch 3/3 [####################]")
    assert re.search(r"^training: 3 epochs of 1347 samples in .* samples/s\)$", result.stdout, re.M)
    assert re.search(r"^wall time: \d+\.\d\d s$", result.stdout, re.M)
    assert "Traceback" not in result.stderr


def test_train_default_reaches_97_percent(tmp_path):
    # The documented default command must reach 97% test accuracy on digits.
    pytest.importorskip("sklearn")
    result = run_nnback(["train"], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert parse_accuracy(result.stdout) >= 97.0


def test_train_mnist_idx_folder(tmp_path, mnist_folder):
    result = run_nnback(
        ["train", "--data", mnist_folder, "--epochs", "5", "--hidden", "16,8", "--seed", "3"],
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert parse_accuracy(result.stdout) >= 90.0
    assert "training: 5 epochs of 240 samples" in result.stdout


@pytest.mark.parametrize(
    "options",
    [
        ["--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.5"],
        ["--activation", "tanh", "--dtype", "float64"],
        ["--activation", "sigmoid", "--batch-size", "7", "--threads", "1"],
    ],
    ids=["sgd", "tanh-float64", "sigmoid-threads"],
)
def test_train_options(tmp_path, npz_path, options):
    result = run_nnback(
        ["train", "--data", npz_path, "--epochs", "8", "--hidden", "16", *options], cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    assert parse_accuracy(result.stdout) >= 90.0


def test_train_same_seed_same_result(tmp_path, npz_path):
    args = ["train", "--data", npz_path, "--epochs", "2", "--hidden", "8", "--seed", "5"]
    first = run_nnback(args, cwd=tmp_path)
    second = run_nnback(args, cwd=tmp_path)

    assert first.returncode == 0, first.stderr
    assert first.stderr.splitlines()[:2] == second.stderr.splitlines()[:2]


def test_save_and_predict_roundtrip(tmp_path, npz_path):
    model_path = tmp_path / "model.npz"
    train = run_nnback(
        ["train", "--data", npz_path, "--epochs", "5", "--hidden", "16", "--save", model_path],
        cwd=tmp_path,
    )
    assert train.returncode == 0, train.stderr
    trained_accuracy = parse_accuracy(train.stdout)

    output = tmp_path / "predictions.txt"
    predict = run_nnback(
        ["predict", "--model", model_path, "--data", npz_path, "--output", output], cwd=tmp_path
    )

    assert predict.returncode == 0, predict.stderr
    lines = output.read_text().splitlines()
    assert len(lines) == 60
    predictions = np.array([int(line) for line in lines])
    model = load(model_path)
    x_test = np.load(npz_path)["x_test"].astype(np.float32)
    np.testing.assert_array_equal(predictions, np.argmax(model.predict(x_test), axis=1))
    accuracy = re.search(r"^accuracy: (\d+\.\d)% \(60 samples\)$", predict.stderr, re.M)
    assert accuracy is not None, predict.stderr
    assert float(accuracy.group(1)) == trained_accuracy


@pytest.mark.parametrize("extension", [".npy", ".csv", ".out"])
def test_predict_output_formats(tmp_path, npz_path, extension):
    model_path = tmp_path / "model.npz"
    train = run_nnback(
        ["train", "--data", npz_path, "--epochs", "1", "--hidden", "4", "--save", model_path],
        cwd=tmp_path,
    )
    assert train.returncode == 0, train.stderr
    output = tmp_path / f"predictions{extension}"

    predict = run_nnback(
        ["predict", "--model", model_path, "--data", npz_path, "--output", output], cwd=tmp_path
    )

    assert predict.returncode == 0, predict.stderr
    if extension == ".npy":
        predictions = np.load(output)
        assert predictions.dtype == np.int64
    else:
        lines = output.read_text().splitlines()
        if extension == ".csv":
            assert lines[0] == "prediction"
            lines = lines[1:]
        predictions = np.array([int(line) for line in lines])
    assert predictions.shape == (60,)
    assert set(predictions.tolist()) <= {0, 1, 2}


def test_predict_to_stdout_without_labels(tmp_path, npz_path):
    model_path = tmp_path / "model.npz"
    train = run_nnback(
        ["train", "--data", npz_path, "--epochs", "1", "--hidden", "4", "--save", model_path],
        cwd=tmp_path,
    )
    assert train.returncode == 0, train.stderr
    samples = tmp_path / "samples.npy"
    np.save(samples, np.load(npz_path)["x_test"][:7])

    predict = run_nnback(["predict", "--model", model_path, "--data", samples], cwd=tmp_path)

    assert predict.returncode == 0, predict.stderr
    assert len(predict.stdout.splitlines()) == 7
    assert "accuracy" not in predict.stderr


def test_plot_writes_png(tmp_path, npz_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "curves.png"

    result = run_nnback(
        ["train", "--data", npz_path, "--epochs", "2", "--hidden", "4", "--plot", plot],
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib(tmp_path, npz_path):
    # A stand-in package that fails to import hides any installed matplotlib.
    blocker = tmp_path / "blocker" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('matplotlib is blocked')\n")

    result = run_nnback(
        ["train", "--data", npz_path, "--epochs", "1", "--plot", tmp_path / "curves.png"],
        cwd=tmp_path,
        extra_path=[blocker.parent],
    )

    assert result.returncode == 2
    assert_one_line_error(result.stderr, "--plot", "pip install matplotlib")


# ---------------------------------------------------------------------------
# Progress bar
# ---------------------------------------------------------------------------


class FakeTerminal:
    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass

    def isatty(self):
        return True


def test_progress_bar_redraws_on_terminal():
    stream = FakeTerminal()
    progress = cli.ProgressBar(2, stream)
    progress.REDRAW_INTERVAL = 0.0

    progress.update(1, 0.5, 0.9)
    progress.end_epoch(1, 0.8, 0.5)
    progress.end_epoch(2, 0.4, 0.75)

    assert stream.text.count("\r") == 3
    assert stream.text.endswith("epoch 2/2 [####################] loss 0.4000 test acc 75.0%\n")
    assert "epoch 1/2 [#####...............] loss 0.9000\r" in stream.text


def test_progress_bar_one_line_per_epoch_on_pipe(tmp_path):
    with open(tmp_path / "log.txt", "w+") as stream:
        progress = cli.ProgressBar(2, stream)
        progress.update(1, 0.5, 0.9)
        progress.end_epoch(1, 0.8, 0.5)
        progress.end_epoch(2, 0.4, 0.75)
        stream.seek(0)
        lines = stream.read().splitlines()

    assert lines == [
        "epoch 1/2 [##########..........] loss 0.8000 test acc 50.0%",
        "epoch 2/2 [####################] loss 0.4000 test acc 75.0%",
    ]


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def run_main(argv, capsys):
    """Call cli.main in-process and return (exit status, stdout, stderr)."""
    try:
        status = cli.main([str(arg) for arg in argv])
    except SystemExit as exc:
        status = exc.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


INVALID_OPTIONS = [
    ("epochs_zero", ["train", "--epochs", "0"], "--epochs"),
    ("epochs_text", ["train", "--epochs", "ten"], "--epochs"),
    ("lr_negative", ["train", "--lr", "-1"], "--lr"),
    ("lr_nan", ["train", "--lr", "nan"], "--lr"),
    ("batch_size_zero", ["train", "--batch-size", "0"], "--batch-size"),
    ("hidden_zero", ["train", "--hidden", "64,0"], "--hidden"),
    ("hidden_text", ["train", "--hidden", "a,b"], "--hidden"),
    ("hidden_empty", ["train", "--hidden", ""], "--hidden"),
    ("threads_beyond_c_int", ["train", "--threads", "99999999999999999999"], "--threads"),
    ("activation", ["train", "--activation", "softplus"], "--activation"),
    ("optimizer", ["train", "--optimizer", "rmsprop"], "--optimizer"),
    ("dtype", ["train", "--dtype", "float16"], "--dtype"),
    ("momentum_one", ["train", "--momentum", "1"], "--momentum"),
    ("threads_zero", ["train", "--threads", "0"], "--threads"),
    ("seed_text", ["train", "--seed", "x"], "--seed"),
    ("seed_negative", ["train", "--seed", "-1"], "--seed"),
    ("unknown_option", ["train", "--colour", "red"], "--colour"),
    ("unknown_command", ["fit"], "fit"),
    ("no_command", [], "COMMAND"),
    ("predict_without_model", ["predict", "--data", "x.npz"], "--model"),
]


@pytest.mark.parametrize(
    "argv, fragment", [case[1:] for case in INVALID_OPTIONS], ids=[case[0] for case in INVALID_OPTIONS]
)
def test_invalid_option(capsys, argv, fragment):
    status, out, err = run_main(argv, capsys)

    assert status == 2
    assert out == ""
    assert_one_line_error(err, fragment)


def test_invalid_option_subprocess(tmp_path):
    result = run_nnback(["train", "--epochs", "-3"], cwd=tmp_path)

    assert result.returncode == 2
    assert_one_line_error(result.stderr, "--epochs", "-3")


def test_negative_seed_subprocess(tmp_path):
    result = run_nnback(["train", "--seed", "-1"], cwd=tmp_path)

    assert result.returncode == 2
    assert_one_line_error(result.stderr, "--seed", "integer >= 0", "'-1'")


def save_labelled_npz(path, y_train, x_train=None, x_test=None):
    """Write a training archive with the labels ``y_train`` and 2 features per sample."""
    n_train = len(y_train)
    np.savez(
        path,
        x_train=np.ones((n_train, 2)) if x_train is None else x_train,
        y_train=np.asarray(y_train),
        x_test=np.ones((2, 2)) if x_test is None else x_test,
        y_test=np.array([0, 1]),
    )
    return path


def test_label_above_int32_subprocess(tmp_path):
    path = save_labelled_npz(tmp_path / "labels.npz", np.array([0, 2**31, 1, 0], dtype=np.int64))

    result = run_nnback(["train", "--data", path, "--epochs", "1"], cwd=tmp_path)

    assert result.returncode == 2
    assert_one_line_error(
        result.stderr, str(path), "largest label is 2147483648", "expected labels below 1,000,000"
    )


@pytest.mark.parametrize("largest", [cli.MAX_CLASSES, 10**8], ids=["bound", "1e8"])
def test_label_too_large_rejected(capsys, tmp_path, largest):
    path = save_labelled_npz(tmp_path / "labels.npz", [0, largest, 1])

    status, out, err = run_main(["train", "--data", path, "--epochs", "1"], capsys)

    assert status == 2
    assert out == ""
    assert_one_line_error(err, f"largest label is {largest}", f"{largest + 1:,} units")


def test_largest_allowed_label_accepted():
    data = datasets.Dataset(
        np.ones((2, 1), np.float32), np.array([0, cli.MAX_CLASSES - 1]),
        np.ones((1, 1), np.float32), np.array([0]),
    )

    cli._check_labels("data.npz", data)


def test_zero_features_subprocess(tmp_path):
    path = save_labelled_npz(
        tmp_path / "empty.npz", [0, 1, 0], x_train=np.zeros((3, 0)), x_test=np.zeros((2, 0))
    )

    result = run_nnback(["train", "--data", path, "--epochs", "1"], cwd=tmp_path)

    assert result.returncode == 2
    assert_one_line_error(result.stderr, str(path), "0 features per sample")


def test_zero_width_mnist_images_rejected(capsys, tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    arrays = {
        "x_train": np.zeros((4, 0, 5), dtype=np.uint8),
        "y_train": np.array([0, 1, 0, 1], dtype=np.uint8),
        "x_test": np.zeros((2, 0, 5), dtype=np.uint8),
        "y_test": np.array([0, 1], dtype=np.uint8),
    }
    for key, name in datasets.MNIST_FILES.items():
        write_idx(folder / name, arrays[key], compress=False)

    status, _, err = run_main(["train", "--data", folder], capsys)

    assert status == 2
    assert_one_line_error(err, "shape (4, 0, 5)", "0 features per sample")


def test_huge_hidden_layer_subprocess(tmp_path, npz_path):
    result = run_nnback(["train", "--data", npz_path, "--hidden", "100000000"], cwd=tmp_path)

    assert result.returncode == 2
    assert_one_line_error(
        result.stderr, "36 x 100,000,000 = 3,600,000,000 elements", "--hidden"
    )


def test_model_larger_than_memory_rejected(capsys, monkeypatch, npz_path):
    monkeypatch.setattr(datasets, "_memory_limit_bytes", lambda: 2**20)

    status, out, err = run_main(["train", "--data", npz_path, "--hidden", "4096"], capsys)

    assert status == 2
    assert out == ""
    assert_one_line_error(err, "the model 36-4096-3 with adam", "more than the 1.0 MiB of memory")


def test_training_memory_estimate_by_hand():
    args = cli.build_parser().parse_args(
        ["train", "--hidden", "5", "--batch-size", "4", "--optimizer", "sgd", "--dtype", "float64"]
    )
    layer_sizes = [3, 5, 2]

    estimate = cli._estimate_training_bytes(args, layer_sizes, n_train=10, n_test=6)

    n_parameters = (3 * 5 + 5) + (5 * 2 + 2)
    # Data, gradient and momentum of each parameter in float64.
    parameter_bytes = n_parameters * 8 * 3
    # The float64 draw of the largest weight matrix, 3 x 5.
    draw_bytes = 15 * 8
    # Outputs and gradients of a batch of 4 and of an evaluation chunk of 6 rows.
    activation_bytes = 2 * (4 + 6) * (3 + 5 + 2) * 8
    # Training features, their shuffled copy and the test features, 3 per row.
    data_bytes = (2 * 10 + 6) * 3 * 8
    assert estimate == parameter_bytes + draw_bytes + activation_bytes + data_bytes


def test_missing_data_path_subprocess(tmp_path):
    result = run_nnback(["train", "--data", tmp_path / "absent.npz"], cwd=tmp_path)

    assert result.returncode == 2
    assert_one_line_error(result.stderr, "absent.npz", "no such file or directory")


def test_truncated_idx_subprocess(tmp_path, mnist_folder):
    path = mnist_folder / datasets.MNIST_FILES["y_train"]
    path.write_bytes(path.read_bytes()[:-1])

    result = run_nnback(["train", "--data", mnist_folder], cwd=tmp_path)

    assert result.returncode == 2
    assert_one_line_error(result.stderr, str(path), "truncated IDX data")


def _corrupt_magic(folder):
    path = folder / datasets.MNIST_FILES["x_test"]
    content = bytearray(path.read_bytes())
    content[0] = 0x1F
    path.write_bytes(bytes(content))
    return path


def test_data_errors(capsys, tmp_path, mnist_folder, npz_path):
    cases = []

    bad_magic = tmp_path / "bad_magic"
    bad_magic.mkdir()
    for entry in mnist_folder.iterdir():
        (bad_magic / entry.name).write_bytes(entry.read_bytes())
    cases.append(([bad_magic], [str(_corrupt_magic(bad_magic)), "invalid IDX magic number"]))

    missing_keys = tmp_path / "missing.npz"
    np.savez(missing_keys, x_train=np.zeros((4, 2)), y_train=np.zeros(4, dtype=int))
    cases.append(([missing_keys], ["missing array(s) x_test, y_test"]))

    not_npz = tmp_path / "garbage.npz"
    not_npz.write_bytes(b"\x00" * 100)
    cases.append(([not_npz], [str(not_npz), "not a valid .npz file"]))

    text_npz = tmp_path / "text.npz"
    text_npz.write_text("1 2 3\n")
    cases.append(([text_npz], [str(text_npz), "not a valid .npz file"]))

    cases.append(([tmp_path / "nowhere"], ["no such file or directory"]))

    text_file = tmp_path / "data.txt"
    text_file.write_text("1 2 3")
    cases.append(([text_file], ["unsupported data file"]))

    empty_folder = tmp_path / "empty"
    empty_folder.mkdir()
    cases.append(([empty_folder], ["missing MNIST file train-images-idx3-ubyte"]))

    for data_args, fragments in cases:
        status, out, err = run_main(["train", "--data", *data_args], capsys)
        assert status == 2, (data_args, err)
        assert_one_line_error(err, *fragments)


def test_single_class_rejected(capsys, tmp_path):
    path = tmp_path / "one_class.npz"
    np.savez(
        path,
        x_train=np.ones((4, 2)), y_train=np.zeros(4, dtype=int),
        x_test=np.ones((2, 2)), y_test=np.zeros(2, dtype=int),
    )

    status, _, err = run_main(["train", "--data", path], capsys)

    assert status == 2
    assert_one_line_error(err, "expected at least 2")


def test_output_paths_checked_before_training(capsys, tmp_path, npz_path):
    missing_dir = tmp_path / "absent" / "model.npz"

    status, out, err = run_main(["train", "--data", npz_path, "--save", missing_dir], capsys)

    assert status == 2
    assert out == ""
    assert_one_line_error(err, "--save", "does not exist")


def test_plot_unsupported_format(capsys, tmp_path, npz_path):
    pytest.importorskip("matplotlib")

    status, out, err = run_main(
        ["train", "--data", npz_path, "--plot", tmp_path / "curves.xyz"], capsys
    )

    assert status == 2
    assert_one_line_error(err, "unsupported image format 'xyz'")


@pytest.fixture
def saved_model(tmp_path, npz_path, capsys):
    path = tmp_path / "model.npz"
    status, _, err = run_main(
        ["train", "--data", npz_path, "--epochs", "1", "--hidden", "4", "--save", path], capsys
    )
    assert status == 0, err
    return path


def test_predict_errors(capsys, tmp_path, npz_path, saved_model):
    wide = tmp_path / "wide.npy"
    np.save(wide, np.zeros((3, 5)))
    cases = [
        (["--model", tmp_path / "absent.npz", "--data", npz_path], ["absent.npz", "no such file"]),
        (["--model", npz_path, "--data", npz_path], [str(npz_path)]),
        (["--model", saved_model, "--data", tmp_path / "absent.npy"], ["no such file"]),
        (["--model", saved_model, "--data", wide], ["5 features", "expects 36"]),
        (
            ["--model", saved_model, "--data", npz_path, "--output", tmp_path / "no" / "p.txt"],
            ["p.txt"],
        ),
    ]

    for argv, fragments in cases:
        status, _, err = run_main(["predict", *argv], capsys)
        assert status == 2, (argv, err)
        assert_one_line_error(err, *fragments)


def rewrite_architecture(source, target, text):
    """Copy the model file ``source`` to ``target`` with the architecture JSON replaced by ``text``."""
    with np.load(source) as archive:
        entries = {name: archive[name] for name in archive.files}
    entries["nnback_architecture"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    np.savez(target, **entries)
    return target


MALFORMED_ARCHITECTURES = [
    ("kind_list", '{"dtype": "float32", "layers": [{"kind": ["linear"]}], "nnback_version": "0"}'),
    ("dtype_list", '{"dtype": ["float32"], "layers": [{"kind": "relu"}], "nnback_version": "0"}'),
    (
        "size_text",
        '{"dtype": "float32", "layers": [{"kind": "linear", "in_features": "36", '
        '"out_features": 4, "bias": true}], "nnback_version": "0"}',
    ),
    ("layers_object", '{"dtype": "float32", "layers": {"0": {}}, "nnback_version": "0"}'),
    ("top_level_list", "[1, 2, 3]"),
    ("deep_arrays", "[" * 100_000 + "]" * 100_000),
    ("deep_objects", '{"a": ' * 100_000 + "0" + "}" * 100_000),
    ("deep_layers", '{"dtype": "float32", "layers": ' + "[" * 100_000 + "]" * 100_000 + "}"),
]


@pytest.mark.parametrize(
    "text", [case[1] for case in MALFORMED_ARCHITECTURES], ids=[case[0] for case in MALFORMED_ARCHITECTURES]
)
def test_predict_malformed_architecture_subprocess(tmp_path, npz_path, saved_model, text):
    model_path = rewrite_architecture(saved_model, tmp_path / "malformed.npz", text)

    result = run_nnback(["predict", "--model", model_path, "--data", npz_path], cwd=tmp_path)

    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_line_error(result.stderr, "malformed.npz")


@pytest.mark.parametrize(
    "error",
    [TypeError("unhashable type: 'list'"), RecursionError("maximum recursion depth exceeded"),
     KeyError("layers"), EOFError("truncated")],
    ids=["type", "recursion", "key", "eof"],
)
def test_predict_load_errors_become_one_line(capsys, monkeypatch, npz_path, saved_model, error):
    from nnback import serialization

    def failing_load(path):
        raise error

    monkeypatch.setattr(serialization, "load", failing_load)

    status, out, err = run_main(["predict", "--model", saved_model, "--data", npz_path], capsys)

    assert status == 2
    assert out == ""
    assert_one_line_error(err, str(saved_model), "not a valid nnback model file")


def test_predict_load_out_of_memory_names_file(capsys, monkeypatch, npz_path, saved_model):
    from nnback import serialization

    def failing_load(path):
        raise MemoryError

    monkeypatch.setattr(serialization, "load", failing_load)

    status, _, err = run_main(["predict", "--model", saved_model, "--data", npz_path], capsys)

    assert status == 2
    assert_one_line_error(err, str(saved_model), "not enough memory")


def test_predict_text_file_as_npy(capsys, tmp_path, saved_model):
    samples = tmp_path / "x.npy"
    samples.write_text("0.5 0.25\n")

    status, _, err = run_main(["predict", "--model", saved_model, "--data", samples], capsys)

    assert status == 2
    assert_one_line_error(err, str(samples), "not a valid .npy file")


def run_nnback_with_file_size_limit(args, cwd, limit_bytes):
    """Run ``python -m nnback ARGS`` with RLIMIT_FSIZE set to ``limit_bytes`` in the child."""
    resource = pytest.importorskip("resource")

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_ROOT
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "nnback", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, preexec_fn=limit_file_size,
    )


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX only")
@pytest.mark.parametrize("extension", [".txt", ".csv", ".npy"])
def test_predict_output_too_large_keeps_old_file(tmp_path, saved_model, extension):
    # 20000 predictions take at least 40000 bytes in every format, over the 8192-byte limit.
    samples = tmp_path / "samples.npy"
    np.save(samples, np.random.default_rng(0).random((20000, 36), dtype=np.float32))
    output = tmp_path / f"predictions{extension}"
    output.write_bytes(b"old content\n")

    result = run_nnback_with_file_size_limit(
        ["predict", "--model", saved_model, "--data", samples, "--output", output],
        cwd=tmp_path, limit_bytes=8192,
    )

    assert result.returncode == 2
    # The reason is "File too large" from write(), or NumPy's count of the
    # bytes written when ndarray.tofile stops short.
    assert_one_line_error(result.stderr, f"--output {output}", "writing the predictions failed")
    assert output.read_bytes() == b"old content\n"
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_predict_output_to_device(capsys, npz_path, saved_model):
    status, _, err = run_main(
        ["predict", "--model", saved_model, "--data", npz_path, "--output", "/dev/null"], capsys
    )

    assert status == 0, err
    assert "wrote 60 predictions to /dev/null" in err


def test_predict_output_replaces_file(capsys, tmp_path, npz_path, saved_model):
    output = tmp_path / "predictions.txt"
    output.write_text("x\n" * 1000)

    status, _, err = run_main(
        ["predict", "--model", saved_model, "--data", npz_path, "--output", output], capsys
    )

    assert status == 0, err
    assert len(output.read_text().splitlines()) == 60
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


# ---------------------------------------------------------------------------
# Outputs that would replace an input
# ---------------------------------------------------------------------------


def assert_rejected_before_work(status, out, err, *fragments):
    """Check the exit status, and that one error line was the only output."""
    assert status == 2
    assert out == ""
    assert_one_line_error(err, *fragments)


def test_train_save_onto_data_rejected(capsys, tmp_path, npz_path):
    original = npz_path.read_bytes()
    os.mkdir(tmp_path / "sub")
    os.symlink(npz_path, tmp_path / "link.npz")
    os.link(npz_path, tmp_path / "hard.npz")
    same_files = [
        npz_path,
        tmp_path / "sub" / ".." / "data.npz",
        tmp_path / "link.npz",
        tmp_path / "hard.npz",
    ]

    for save in same_files:
        status, out, err = run_main(["train", "--data", npz_path, "--save", save], capsys)
        assert_rejected_before_work(status, out, err, f"--save {save}", f"--data {npz_path}")
        assert npz_path.read_bytes() == original


def test_train_plot_onto_data_rejected(capsys, npz_path):
    original = npz_path.read_bytes()

    status, out, err = run_main(["train", "--data", npz_path, "--plot", npz_path], capsys)

    assert_rejected_before_work(status, out, err, f"--plot {npz_path}", f"--data {npz_path}")
    assert npz_path.read_bytes() == original


def test_train_save_and_plot_same_file_rejected(capsys, tmp_path, npz_path):
    # Neither file exists yet, so the paths are compared after resolving them.
    plot = tmp_path / "out.png"
    relative = os.path.relpath(plot)

    status, out, err = run_main(
        ["train", "--data", npz_path, "--save", plot, "--plot", relative], capsys
    )

    assert_rejected_before_work(status, out, err, f"--save {plot}", f"--plot {relative}")
    assert not plot.exists()


def test_train_save_onto_mnist_file_rejected(capsys, mnist_folder):
    # In the fixture, the training images are gzipped and the test images not.
    for name in ["train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"]:
        target = mnist_folder / name
        original = target.read_bytes()

        status, out, err = run_main(
            ["train", "--data", mnist_folder, "--save", target], capsys
        )

        assert_rejected_before_work(status, out, err, f"--save {target}", f"--data {mnist_folder}")
        assert name in err
        assert target.read_bytes() == original


def test_train_save_inside_mnist_folder_accepted(capsys, mnist_folder):
    model = mnist_folder / "model.npz"

    status, _, err = run_main(
        ["train", "--data", mnist_folder, "--epochs", "1", "--hidden", "4", "--save", model],
        capsys,
    )

    assert status == 0, err
    assert load(model).layers[0].weight.data.shape == (36, 4)


def test_predict_output_onto_inputs_rejected(capsys, npz_path, saved_model):
    model_bytes = saved_model.read_bytes()
    data_bytes = npz_path.read_bytes()
    cases = [
        (saved_model, f"--model {saved_model}"),
        (npz_path, f"--data {npz_path}"),
    ]

    for output, fragment in cases:
        status, out, err = run_main(
            ["predict", "--model", saved_model, "--data", npz_path, "--output", output], capsys
        )
        assert_rejected_before_work(status, out, err, f"--output {output}", fragment)
        assert saved_model.read_bytes() == model_bytes
        assert npz_path.read_bytes() == data_bytes


def test_predict_output_beside_mnist_files_accepted(capsys, tmp_path, mnist_folder):
    model = tmp_path / "model.npz"
    status, _, err = run_main(
        ["train", "--data", mnist_folder, "--epochs", "1", "--hidden", "4", "--save", model],
        capsys,
    )
    assert status == 0, err
    output = mnist_folder / "predictions.txt"

    status, _, err = run_main(
        ["predict", "--model", model, "--data", mnist_folder, "--output", output], capsys
    )

    assert status == 0, err
    assert len(output.read_text().splitlines()) == 60


# ---------------------------------------------------------------------------
# NaN and infinite features
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("key, row, column", [("x_train", 0, 5), ("x_test", 59, 35)])
def test_train_nonfinite_features_rejected(capsys, tmp_path, npz_path, key, row, column):
    arrays = dict(np.load(npz_path))
    arrays[key][row, column] = np.nan
    arrays[key][-1, -1] = np.inf
    path = tmp_path / "nonfinite.npz"
    np.savez(path, **arrays)
    count = 1 if (row, column) == (arrays[key].shape[0] - 1, 35) else 2

    status, out, err = run_main(["train", "--data", path, "--epochs", "1"], capsys)

    assert_rejected_before_work(
        status, out, err, str(path),
        f"{key} contains {count} NaN or infinite value(s) (first at row {row}, column {column}",
    )
    assert "--lr" not in err


def test_predict_nonfinite_samples_rejected(capsys, tmp_path, saved_model):
    samples = np.zeros((6, 36), dtype=np.float32)
    samples[2, 7] = np.nan
    samples[4, 0] = -np.inf
    path = tmp_path / "nan.npy"
    np.save(path, samples)

    status, out, err = run_main(["predict", "--model", saved_model, "--data", path], capsys)

    assert_rejected_before_work(
        status, out, err, str(path), "2 NaN or infinite value(s) (first at row 2, column 7"
    )


# ---------------------------------------------------------------------------
# Test labels missing from the training labels
# ---------------------------------------------------------------------------


def test_unseen_test_labels_warned(capsys, tmp_path):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 3)).astype(np.float32)
    y_train = (x[:40, 0] > 0).astype(np.int64)
    y_test = (x[40:, 0] > 0).astype(np.int64)
    y_test[[2, 5]] = [7, 9]
    path = tmp_path / "unseen.npz"
    np.savez(path, x_train=x[:40], y_train=y_train, x_test=x[40:], y_test=y_test)
    model = tmp_path / "model.npz"

    status, out, err = run_main(
        ["train", "--data", path, "--epochs", "2", "--hidden", "4", "--save", model], capsys
    )

    assert status == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert warnings == [
        f"nnback: warning: {path}: y_test contains labels never seen in y_train: 7, 9. "
        f"Test samples with these labels count as errors."
    ]
    # One output unit per index up to the largest label of either split.
    assert load(model).layers[-1].weight.data.shape == (4, 10)
    # Samples 2 and 5 cannot be predicted right, so at most 8 of 10 are.
    assert parse_accuracy(out) <= 80.0


def test_seen_test_labels_not_warned(capsys, npz_path):
    status, _, err = run_main(["train", "--data", npz_path, "--epochs", "1"], capsys)

    assert status == 0, err
    assert "warning" not in err


# ---------------------------------------------------------------------------
# Small command-line behaviors
# ---------------------------------------------------------------------------


def test_version_subprocess(tmp_path):
    result = run_nnback(["--version"], cwd=tmp_path)

    assert result.returncode == 0
    assert result.stdout == f"nnback {nnback.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+", nnback.__version__)


@pytest.mark.parametrize(
    "command, required",
    [("train", []), ("predict", ["--model", "m.npz", "--data", "x.npy"]), ("check", [])],
)
def test_unknown_option_names_subcommand_help(capsys, command, required):
    status, out, err = run_main([command, *required, "--bogus"], capsys)

    assert status == 2
    assert out == ""
    assert err == (
        f"nnback: error: unrecognized arguments: --bogus (see 'nnback {command} --help')\n"
    )


def test_unknown_option_before_command_names_main_help(capsys):
    status, _, err = run_main(["--bogus", "check"], capsys)

    assert status == 2
    assert err == "nnback: error: unrecognized arguments: --bogus (see 'nnback --help')\n"


def test_predict_model_directory(capsys, tmp_path, npz_path):
    status, out, err = run_main(["predict", "--model", tmp_path, "--data", npz_path], capsys)

    assert_rejected_before_work(status, out, err, f"{tmp_path}: is a directory")


def test_plot_ticks_whole_epochs(tmp_path, monkeypatch):
    pyplot = pytest.importorskip("matplotlib.pyplot")
    from nnback import plotting

    figures = []
    real_close = pyplot.close

    def recording_close(figure=None):
        figures.append(figure)
        real_close(figure)

    monkeypatch.setattr(pyplot, "close", recording_close)
    # Over epochs 1 to 5, matplotlib's default locator puts ticks at halves.
    plotting.plot_history([1.0, 0.8, 0.6, 0.5, 0.4], [0.5, 0.6, 0.7, 0.8, 0.9], tmp_path / "p.png")

    assert len(figures) == 1
    for axes in figures[0].axes:
        ticks = axes.get_xticks()
        assert len(ticks) >= 2
        np.testing.assert_array_equal(ticks, np.round(ticks))


def environment_with_buffering(buffered):
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_ROOT
    env.pop("PYTHONUNBUFFERED", None)
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    return env


# argparse ignores an OSError when it prints --help or --version, so the
# unbuffered runs of those exit with status 0 and are left out.
CLOSED_STDOUT_CASES = [
    ("version", True), ("help", True),
    ("train", True), ("train", False), ("predict", True), ("predict", False),
]


@pytest.mark.parametrize("command, buffered", CLOSED_STDOUT_CASES)
def test_closed_stdout_exits_quietly(tmp_path, npz_path, saved_model, command, buffered):
    argv = {
        "version": ["--version"],
        "help": ["train", "--help"],
        "train": ["train", "--data", npz_path, "--epochs", "1", "--hidden", "4"],
        "predict": ["predict", "--model", saved_model, "--data", npz_path],
    }[command]
    # The read end is closed before the command starts, so its first write to
    # stdout fails.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "nnback", *map(str, argv)],
            cwd=tmp_path, env=environment_with_buffering(buffered),
            stdout=write_end, stderr=subprocess.PIPE, text=True,
        )
    finally:
        os.close(write_end)

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "BrokenPipeError" not in result.stderr
    assert "error" not in result.stderr


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_predict_pipe_closed_midway_exits_quietly(tmp_path, saved_model, buffered):
    # 400000 predictions are 800000 bytes, far more than a pipe buffers, so
    # the command is still writing when the reader closes its end.
    samples = tmp_path / "many.npy"
    np.save(samples, np.zeros((400000, 36), dtype=np.uint8))
    env = environment_with_buffering(buffered)
    process = subprocess.Popen(
        [sys.executable, "-m", "nnback", "predict", "--model", saved_model, "--data", samples],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        first_line = process.stdout.readline()
        process.stdout.close()
        stderr = process.stderr.read()
        status = process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert first_line.strip().isdigit()
    assert status == 1
    assert stderr == b""


def test_predict_empty_samples_warns(capsys, tmp_path, saved_model):
    samples = tmp_path / "empty.npy"
    np.save(samples, np.zeros((0, 36), dtype=np.float32))
    output = tmp_path / "predictions.npy"

    status, out, err = run_main(["predict", "--model", saved_model, "--data", samples], capsys)

    assert status == 0
    assert out == ""
    assert err == f"nnback: warning: no samples in {samples}\n"

    status, out, err = run_main(
        ["predict", "--model", saved_model, "--data", samples, "--output", output], capsys
    )

    assert status == 0
    assert err.splitlines()[0] == f"nnback: warning: no samples in {samples}"
    predictions = np.load(output)
    assert predictions.shape == (0,)
    assert predictions.dtype == np.int64
