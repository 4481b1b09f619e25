"""Command line interface: ``nnback train``, ``nnback predict`` and ``nnback check``.

``nnback train`` fits a multilayer perceptron with softmax cross-entropy to a
data set and reports the test accuracy. Without arguments it trains on the
digits that ship with scikit-learn. ``nnback predict`` applies a saved model to
new samples. ``nnback check`` tests the compiled kernels on this machine and
prints the BLAS libraries in use.

Progress goes to stderr and results to stdout. Invalid options and unreadable or
malformed input end the program with one line ``nnback: error: ...`` on stderr
and exit status 2. A training loss that becomes NaN or infinite ends ``nnback
train`` with such a line and exit status 1, unless ``--on-nonfinite continue``
is given. Ctrl-C (SIGINT) ends it with one line ``nnback: interrupted...`` and
exit status 130. The file given to ``--save`` is only ever replaced whole, so
after an interrupt it is the old file or a complete new one. An output path
that names an input file is rejected before anything is read. When the reader
of stdout closes the pipe, the command ends with exit status 1 and no message.
"""

import argparse
import contextlib
import math
import os
import signal
import stat
import sys
import time

import numpy as np

from nnback import __version__, datasets
from nnback._files import atomic_write
from nnback.training import NonFiniteLossError

# The Python interface of the command line. The other functions of this module
# implement the commands.
__all__ = ["build_parser", "main"]

PROG = "nnback"
EXIT_USAGE = 2
EXIT_FAILURE = 1
# 128 + SIGINT, the status that shells report for a process ended by Ctrl-C.
EXIT_INTERRUPTED = 130

# Defaults of ``nnback train``. On the digits data, seeds 0 to 39 gave test
# accuracies from 97.6% to 98.4% (mean 98.1%), with about 0.3 s of training
# per run on a 2-core x86-64 machine.
DEFAULT_HIDDEN = (256,)
DEFAULT_ACTIVATION = "relu"
DEFAULT_OPTIMIZER = "adam"
DEFAULT_LEARNING_RATES = {"adam": 1e-3, "sgd": 0.05}
DEFAULT_MOMENTUM = 0.9
DEFAULT_EPOCHS = 40
DEFAULT_BATCH_SIZE = 32
DEFAULT_SEED = 0

# Test samples per forward pass when evaluating, to bound the memory of the
# hidden activations on large test sets.
EVALUATION_CHUNK = 4096

# Bounds on the model that ``nnback train`` builds, checked before anything is
# allocated. Labels are class indices, so the output layer has one unit per
# index up to the largest label, and a stray large label would otherwise ask for
# a huge output layer. The weight bound is the command's own sanity limit (8 GiB
# in float32), with the value of the largest BLAS dimension.
MAX_CLASSES = 1_000_000
MAX_WEIGHT_ELEMENTS = 2**31 - 1

# Labels listed at most in the warning about test labels missing from y_train.
MAX_LABELS_SHOWN = 10

class CommandError(Exception):
    """An error to report as one line on stderr, with exit status 2."""


@contextlib.contextmanager
def _reporting_io_errors():
    """Turn an OSError or ValueError of loading or saving into a CommandError.

    BrokenPipeError passes through to :func:`main`.
    """
    try:
        yield
    except BrokenPipeError:
        # The reader of stdout has gone, which main handles without a message.
        raise
    except (OSError, ValueError) as exc:
        raise CommandError(_describe_error(exc)) from exc


class _ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser that reports usage errors as one line and exits with status 2."""

    def error(self, message):
        self.exit(
            EXIT_USAGE,
            f"{PROG}: error: {message} (see '{self.prog} --help')\n",
        )


class _SubcommandParser(_ArgumentParser):
    """The parser of one command, which reports an unknown option itself.

    argparse passes the arguments that a subparser does not know back to the
    top-level parser, whose error message would point to 'nnback --help'
    instead of the help of the command.
    """

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


# ---------------------------------------------------------------------------
# Option types
# ---------------------------------------------------------------------------


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _thread_count(text):
    from nnback.parallelism import MAX_THREADS

    value = _positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_THREADS} threads, got {text!r}")
    return value


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _momentum(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _hidden_sizes(text):
    sizes = []
    for part in text.split(","):
        try:
            size = int(part)
        except ValueError:
            size = 0
        if size < 1:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers >= 1 such as 128,64, got {text!r}"
            )
        sizes.append(size)
    return tuple(sizes)


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------


def build_parser():
    """Build the argument parser of the ``nnback`` command.

    Returns
    -------
    argparse.ArgumentParser
        The parser with the ``train``, ``predict`` and ``check`` commands. Each
        parsed namespace has a ``run`` attribute, the function that runs the
        command and returns its exit status.

    Examples
    --------
    >>> from nnback.cli import build_parser
    >>> args = build_parser().parse_args(["train", "--epochs", "5", "--hidden", "64,32"])
    >>> args.command, args.epochs, args.hidden
    ('train', 5, (64, 32))
    """
    parser = _ArgumentParser(
        prog=PROG,
        description="Train and apply multilayer perceptrons on the CPU.",
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {__version__}",
        help="print the version of nnback and exit",
    )
    subcommands = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_SubcommandParser
    )
    subcommands.required = True

    train = subcommands.add_parser(
        "train",
        help="train a classifier and report its test accuracy",
        description=(
            "Train a multilayer perceptron with softmax cross-entropy and report its "
            "accuracy on the test split. Without --data, train on the 8x8 digits that "
            "ship with scikit-learn (1347 training and 450 test samples). Labels must "
            "be integer class indices >= 0, and the output layer gets one unit per "
            "index up to the largest label of the training and test splits."
        ),
    )
    train.add_argument(
        "--data", metavar="PATH",
        help="an .npz file with x_train, y_train, x_test, y_test, or a folder with the "
             "four MNIST IDX files (optionally .gz); default: scikit-learn's digits",
    )
    train.add_argument(
        "--hidden", type=_hidden_sizes, default=DEFAULT_HIDDEN, metavar="SIZES",
        help="hidden layer sizes, comma-separated (default: "
             f"{','.join(map(str, DEFAULT_HIDDEN))})",
    )
    train.add_argument(
        "--activation", choices=("relu", "tanh", "sigmoid"), default=DEFAULT_ACTIVATION,
        help=f"activation of the hidden layers (default: {DEFAULT_ACTIVATION})",
    )
    train.add_argument(
        "--optimizer", choices=("sgd", "adam"), default=DEFAULT_OPTIMIZER,
        help=f"optimizer (default: {DEFAULT_OPTIMIZER})",
    )
    train.add_argument(
        "--lr", type=_positive_float, metavar="RATE",
        help="learning rate (default: "
             + ", ".join(f"{rate:g} for {name}" for name, rate in DEFAULT_LEARNING_RATES.items())
             + ")",
    )
    train.add_argument(
        "--momentum", type=_momentum, default=DEFAULT_MOMENTUM,
        help=f"momentum of sgd, in [0, 1); adam ignores it (default: {DEFAULT_MOMENTUM})",
    )
    train.add_argument(
        "--epochs", type=_positive_int, default=DEFAULT_EPOCHS,
        help=f"number of passes over the training data (default: {DEFAULT_EPOCHS})",
    )
    train.add_argument(
        "--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE, metavar="N",
        help=f"samples per gradient step (default: {DEFAULT_BATCH_SIZE})",
    )
    train.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32",
        help="floating-point type of the parameters and the computation (default: float32)",
    )
    train.add_argument(
        "--seed", type=_non_negative_int, default=DEFAULT_SEED,
        help="seed of the initial weights and of the shuffling (default: "
             f"{DEFAULT_SEED})",
    )
    _add_threads_option(train)
    train.add_argument("--save", metavar="PATH", help="save the trained model to this .npz file")
    train.add_argument(
        "--checkpoint", action="store_true",
        help="with --save, also write the model to PATH at the end of every epoch, so "
             "that an interrupted run keeps the last finished epoch (each write "
             "replaces the file atomically)",
    )
    train.add_argument(
        "--on-nonfinite", choices=("stop", "continue"), default="stop",
        help="what a NaN or infinite batch loss does: 'stop' ends the command with "
             "exit status 1 without saving, 'continue' prints one warning and trains "
             "on (default: stop)",
    )
    train.add_argument(
        "--plot", metavar="PATH",
        help="save a plot of the loss and test accuracy per epoch (.png, .pdf, .svg; "
             "requires matplotlib)",
    )
    train.set_defaults(run=run_train)

    predict = subcommands.add_parser(
        "predict",
        help="predict the classes of samples with a saved model",
        description=(
            "Predict the class of each sample with a model saved by 'nnback train "
            "--save'. Prints the accuracy when the data has labels."
        ),
    )
    predict.add_argument("--model", required=True, metavar="PATH", help="the saved model (.npz)")
    predict.add_argument(
        "--data", required=True, metavar="PATH",
        help="an .npz file with x_test (and optionally y_test), an .npy file of samples, "
             "or a folder with the MNIST t10k IDX files",
    )
    predict.add_argument(
        "--output", metavar="PATH",
        help="write the predictions here: .npy (int64 array), .csv (a 'prediction' "
             "column) or any other name for one label per line; default: stdout",
    )
    _add_threads_option(predict)
    predict.set_defaults(run=run_predict)

    check = subcommands.add_parser(
        "check",
        help="test the compiled kernels and the BLAS on this machine",
        description=(
            "Print the BLAS and OpenMP libraries loaded by NumPy and SciPy, then compare "
            "every compiled operation with the NumPy reference in float32 and float64 and "
            "with finite differences in float64. Exits with status 1 if any check fails."
        ),
    )
    check.add_argument(
        "--verbose", action="store_true", help="print every check, not only the failed ones"
    )
    check.add_argument(
        "--seed", type=_non_negative_int, default=DEFAULT_SEED,
        help=f"seed of the random test inputs (default: {DEFAULT_SEED})",
    )
    _add_threads_option(check)
    check.set_defaults(run=run_check)
    return parser


def _add_threads_option(subparser):
    subparser.add_argument(
        "--threads", type=_thread_count, metavar="N",
        help="maximum number of BLAS and OpenMP threads (default: the libraries' own)",
    )


# ---------------------------------------------------------------------------
# Progress output
# ---------------------------------------------------------------------------


class ProgressBar:
    """Per-epoch progress on a text stream.

    On a terminal one line is redrawn with ``\\r`` several times per second. On
    any other stream (a file or a pipe) one line is written per finished epoch.
    The bar shows the fraction of all epochs done.
    """

    WIDTH = 20
    REDRAW_INTERVAL = 0.1

    def __init__(self, n_epochs, stream):
        self.n_epochs = n_epochs
        self.stream = stream
        self.interactive = _is_terminal(stream)
        self._last_draw = -math.inf
        self._line_length = 0
        # Whether the terminal cursor is after a drawn line that has no newline yet.
        self._line_open = False

    def _format(self, epoch, epoch_fraction, loss, accuracy):
        done = (epoch - 1 + epoch_fraction) / self.n_epochs
        filled = int(done * self.WIDTH)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        line = f"epoch {epoch}/{self.n_epochs} [{bar}] loss {loss:.4f}"
        if accuracy is not None:
            line += f" test acc {100.0 * accuracy:.1f}%"
        return line

    def _draw(self, line):
        padding = " " * max(0, self._line_length - len(line))
        self.stream.write("\r" + line + padding)
        self.stream.flush()
        self._line_length = len(line)
        self._line_open = True

    def update(self, epoch, epoch_fraction, loss):
        """Redraw the running epoch on a terminal, at most every REDRAW_INTERVAL seconds."""
        if not self.interactive:
            return
        now = time.monotonic()
        if now - self._last_draw < self.REDRAW_INTERVAL:
            return
        self._last_draw = now
        self._draw(self._format(epoch, epoch_fraction, loss, None))

    def end_epoch(self, epoch, loss, accuracy):
        """Show the finished epoch with its mean loss and test accuracy."""
        line = self._format(epoch, 1.0, loss, accuracy)
        if self.interactive:
            self._draw(line)
            if epoch == self.n_epochs:
                self.end_line()
        else:
            self.stream.write(line + "\n")
            self.stream.flush()


    def end_line(self):
        """End a partly drawn terminal line, so that the next output starts on a line of its own."""
        if self._line_open:
            self.stream.write("\n")
            self.stream.flush()
            self._line_open = False
            self._line_length = 0

    def write_line(self, text):
        """Write ``text`` as a line of its own between progress lines."""
        self.end_line()
        self.stream.write(text + "\n")
        self.stream.flush()


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# ---------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------


def _load_training_data(path):
    if path is None:
        try:
            return datasets.load_digits()
        except ImportError as exc:
            raise CommandError(str(exc)) from exc
    return datasets.load_dataset(path)


def _check_labels(source, data):
    """Raise CommandError unless the labels give between 2 and MAX_CLASSES classes."""
    n_classes = data.n_classes
    if n_classes > MAX_CLASSES:
        raise CommandError(
            f"{source}: the largest label is {n_classes - 1}, so the output layer would "
            f"need {n_classes:,} units, one per class index: expected labels below "
            f"{MAX_CLASSES:,}; number the classes 0, 1, 2, ..."
        )
    if n_classes < 2:
        raise CommandError(
            f"{source}: the labels contain {n_classes} class(es): expected at least 2"
        )


def _estimate_training_bytes(args, layer_sizes, n_train, n_test):
    """Return an estimate of the memory in bytes that :func:`train_model` allocates.

    The estimate counts the data, gradient and optimizer state of every
    parameter and the float64 draw of the largest initial weight matrix. It
    adds the forward outputs and backward gradients of one batch and of one
    evaluation chunk. Last come the training features in the computation dtype,
    their shuffled copy and the test features. The loaded float32 data and the
    interpreter itself are left out.
    """
    itemsize = np.dtype(args.dtype).itemsize
    layer_pairs = list(zip(layer_sizes[:-1], layer_sizes[1:]))
    n_parameters = sum(n_in * n_out + n_out for n_in, n_out in layer_pairs)
    if args.optimizer == "adam":
        state_copies = 2
    else:
        state_copies = 1 if args.momentum > 0 else 0
    parameter_bytes = n_parameters * itemsize * (2 + state_copies)
    initial_draw_bytes = max(n_in * n_out for n_in, n_out in layer_pairs) * 8

    batch_rows = min(args.batch_size, n_train)
    evaluation_rows = min(EVALUATION_CHUNK, n_test)
    activation_bytes = 2 * (batch_rows + evaluation_rows) * sum(layer_sizes) * itemsize

    data_bytes = (2 * n_train + n_test) * layer_sizes[0] * itemsize
    return parameter_bytes + initial_draw_bytes + activation_bytes + data_bytes


def _check_model_size(args, layer_sizes, n_train, n_test):
    """Raise CommandError if the model is too large to build, before anything is allocated."""
    model_text = "-".join(str(size) for size in layer_sizes)
    for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:]):
        if n_in * n_out > MAX_WEIGHT_ELEMENTS:
            raise CommandError(
                f"the model {model_text} has a weight matrix of {n_in:,} x {n_out:,} = "
                f"{n_in * n_out:,} elements, more than the {MAX_WEIGHT_ELEMENTS:,} that "
                f"'nnback train' builds: use smaller --hidden sizes"
            )

    limit = datasets._memory_limit_bytes()
    needed = _estimate_training_bytes(args, layer_sizes, n_train, n_test)
    if limit is not None and needed > limit:
        advice = "use smaller --hidden sizes or a smaller --batch-size"
        if args.dtype == "float64":
            advice += ", or --dtype float32"
        raise CommandError(
            f"the model {model_text} with {args.optimizer}, {args.dtype} and "
            f"--batch-size {args.batch_size} needs about "
            f"{datasets._format_bytes(needed)} (an estimate), more than the "
            f"{datasets._format_bytes(limit)} of memory of this machine: {advice}"
        )


def _accuracy(model, x, y):
    """Return the fraction of rows of ``x`` whose predicted class equals ``y``."""
    return float(np.mean(predict_classes(model, x) == y))


def predict_classes(model, x):
    """Return the index of the largest logit of each row of ``x`` as int64."""
    predictions = np.empty(x.shape[0], dtype=np.int64)
    for start in range(0, x.shape[0], EVALUATION_CHUNK):
        logits = model.predict(x[start:start + EVALUATION_CHUNK])
        predictions[start:start + EVALUATION_CHUNK] = np.argmax(logits, axis=1)
    return predictions


def _make_optimizer(args, parameters):
    from nnback.optim import SGD, Adam

    learning_rate = args.lr if args.lr is not None else DEFAULT_LEARNING_RATES[args.optimizer]
    if args.optimizer == "adam":
        return Adam(parameters, lr=learning_rate)
    return SGD(parameters, lr=learning_rate, momentum=args.momentum)


def train_model(args, data, progress, checkpoint=None):
    """Train the model that ``args`` describe on ``data`` and return it with its history.

    Returns ``(model, losses, accuracies, training_seconds)``: the mean training
    loss and the test accuracy after each epoch, and the time spent in the
    training steps, without the evaluations. ``checkpoint(epoch, model)``, if
    given, is called at the end of every epoch before its progress line.

    Raises :class:`nnback.training.NonFiniteLossError` at the first batch whose
    loss is NaN or infinite, unless ``args.on_nonfinite`` is "continue", which
    writes one warning line to ``progress`` instead.
    """
    from nnback.layers import SoftmaxCrossEntropy, mlp
    from nnback.training import train_step

    dtype = np.dtype(args.dtype)
    x_train = np.ascontiguousarray(data.x_train, dtype=dtype)
    x_test = np.ascontiguousarray(data.x_test, dtype=dtype)
    y_train = data.y_train.astype(np.intp)
    y_test = data.y_test

    rng = np.random.default_rng(args.seed)
    layer_sizes = [data.n_features, *args.hidden, data.n_classes]
    model = mlp(layer_sizes, activation=args.activation, dtype=dtype, rng=rng)
    loss = SoftmaxCrossEntropy()
    optimizer = _make_optimizer(args, model.parameters())

    n_samples = x_train.shape[0]
    batch_size = min(args.batch_size, n_samples)
    # Each epoch gathers the shuffled samples into these buffers, so that every
    # batch is a contiguous slice of them.
    x_shuffled = np.empty_like(x_train)
    y_shuffled = np.empty_like(y_train)

    losses = []
    accuracies = []
    training_seconds = 0.0
    nonfinite_reported = False
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        order = rng.permutation(n_samples)
        np.take(x_train, order, axis=0, out=x_shuffled)
        np.take(y_train, order, out=y_shuffled)

        loss_sum = 0.0
        for batch_start in range(0, n_samples, batch_size):
            batch_stop = min(batch_start + batch_size, n_samples)
            batch_loss = train_step(
                model, loss, optimizer,
                x_shuffled[batch_start:batch_stop], y_shuffled[batch_start:batch_stop],
            )
            if not math.isfinite(batch_loss) and not nonfinite_reported:
                batch = batch_start // batch_size + 1
                where = f"the loss of batch {batch} in epoch {epoch} (both counted from 1)"
                if args.on_nonfinite == "stop":
                    raise NonFiniteLossError(
                        f"{where} is {batch_loss}: lower the learning rate (--lr) or scale "
                        f"the features, or pass --on-nonfinite continue",
                        epoch, batch, batch_loss,
                    )
                progress.write_line(
                    f"{PROG}: warning: {where} is {batch_loss}. Training goes on because "
                    f"of --on-nonfinite continue, and later non-finite losses are not reported"
                )
                nonfinite_reported = True
            loss_sum += batch_loss * (batch_stop - batch_start)
            progress.update(epoch, batch_stop / n_samples, loss_sum / batch_stop)
        training_seconds += time.perf_counter() - start

        epoch_loss = loss_sum / n_samples
        accuracy = _accuracy(model, x_test, y_test)
        losses.append(epoch_loss)
        accuracies.append(accuracy)
        if checkpoint is not None:
            checkpoint(epoch, model)
        progress.end_epoch(epoch, epoch_loss, accuracy)

    return model, losses, accuracies, training_seconds


def _check_output_directory(option, path):
    """Raise CommandError unless the folder that ``path`` would be written to exists."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CommandError(f"{option} {path}: the directory {directory} does not exist")
    if os.path.isdir(path):
        raise CommandError(f"{option} {path}: is a directory, expected a file name")


def _same_file(first, second):
    """Return whether two paths name the same file, whether it exists yet or not.

    Existing files are compared by device and inode (``os.path.samefile``),
    which also catches hard links. Otherwise the paths are compared after
    resolving symbolic links and "..", and the case on case-insensitive systems.
    """
    if os.path.exists(first) and os.path.exists(second):
        try:
            return os.path.samefile(first, second)
        except OSError:
            pass
    return os.path.normcase(os.path.realpath(first)) == os.path.normcase(os.path.realpath(second))


def _data_files(path):
    """Return the files that ``--data path`` reads: the path, or the MNIST files in a folder."""
    if not os.path.isdir(path):
        return [path]
    names = datasets.MNIST_FILES.values()
    return [os.path.join(path, name + suffix) for name in names for suffix in ("", ".gz")]


def _check_not_input(output_option, output_path, input_option, input_path):
    """Raise CommandError if writing ``output_path`` would replace a file that the command reads.

    ``--data`` may be a folder, whose MNIST files are protected, and other
    files in that folder may be written. A device or FIFO such as /dev/stdout
    is not replaced by a write, so it is not checked.
    """
    if _is_special_file(output_path):
        return
    input_files = _data_files(input_path) if input_option == "--data" else [input_path]
    for input_file in input_files:
        if not _same_file(output_path, input_file):
            continue
        if input_file == input_path:
            input_description = f"{input_option} {input_path}"
        else:
            input_description = (
                f"the file {os.path.basename(input_file)} of {input_option} {input_path}"
            )
        raise CommandError(
            f"{output_option} {output_path} is the same file as {input_description}, so "
            f"writing it would replace that input: choose another {output_option} path"
        )


def _check_plot_path(path):
    """Raise CommandError unless matplotlib is installed and can write ``path``."""
    from nnback.plotting import require_matplotlib

    _check_output_directory("--plot", path)
    try:
        pyplot = require_matplotlib()
    except ImportError as exc:
        raise CommandError(f"--plot: {exc}") from exc

    extension = os.path.splitext(path)[1].lstrip(".").lower()
    supported = pyplot.figure().canvas.get_supported_filetypes()
    pyplot.close("all")
    if extension not in supported:
        raise CommandError(
            f"--plot {path}: unsupported image format {extension!r}: expected one of "
            f"{', '.join(sorted(supported))}"
        )


class _ModelSaver:
    """Save the model to the --save file and record the last epoch saved there."""

    def __init__(self, path):
        self.path = path
        # The last epoch whose model is in the file, or None.
        self.saved_epoch = None

    def __call__(self, epoch, model):
        try:
            model.save(self.path)
        except (OSError, ValueError) as exc:
            # An OSError of a failed write often has no file name.
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise CommandError(
                f"--save {self.path}: saving the model failed: {reason}{self.note()}"
            ) from exc
        self.saved_epoch = epoch

    def note(self):
        """Return the end of a message that states what the --save file contains."""
        return _saved_model_note(self.path, self.saved_epoch)


def _check_train_outputs(args):
    """Raise CommandError unless --save and --plot can be written without losing a file."""
    if args.checkpoint and args.save is None:
        raise CommandError("--checkpoint needs --save PATH, the file that it writes")
    outputs = [(option, path) for option, path in (("--save", args.save), ("--plot", args.plot))
               if path is not None]
    for option, path in outputs:
        if args.data is not None:
            _check_not_input(option, path, "--data", args.data)
    if len(outputs) == 2 and _same_file(args.save, args.plot):
        raise CommandError(
            f"--save {args.save} and --plot {args.plot} are the same file, so the plot "
            f"would replace the model: give them different paths"
        )
    if args.save is not None:
        _check_output_directory("--save", args.save)
    if args.plot is not None:
        _check_plot_path(args.plot)


def _load_checked_training_data(args):
    """Load the data of ``nnback train``, check it and return it as a Dataset."""
    with _reporting_io_errors():
        data = _load_training_data(args.data)
    source = args.data if args.data is not None else "digits"
    if data.x_test.shape[0] == 0:
        raise CommandError(f"{source}: the test split has no samples")
    _check_labels(source, data)
    layer_sizes = [data.n_features, *args.hidden, data.n_classes]
    _check_model_size(args, layer_sizes, data.x_train.shape[0], data.x_test.shape[0])
    _warn_unseen_test_labels(source, data)
    return data


def _warn_unseen_test_labels(source, data):
    """Print one warning line if y_test contains labels that y_train does not.

    scikit-learn's classifiers and accuracy_score accept such test labels and
    count their samples as errors, and a rare class can fall entirely into the
    test split by chance, so the command trains anyway. The output layer has a
    unit for these labels (n_classes covers both splits), but no training
    sample has them, so training only lowers their logits.
    """
    unseen = np.setdiff1d(data.y_test, data.y_train)
    if unseen.size == 0:
        return
    label_list = ", ".join(str(label) for label in unseen[:MAX_LABELS_SHOWN])
    if unseen.size > MAX_LABELS_SHOWN:
        label_list += f", ... ({unseen.size} labels)"
    print(
        f"{PROG}: warning: {source}: y_test contains labels never seen in y_train: "
        f"{label_list}. Test samples with these labels count as errors.",
        file=sys.stderr,
    )


def _print_training_summary(args, data, accuracies, training_seconds, wall_start):
    n_trained = args.epochs * data.x_train.shape[0]
    throughput = n_trained / training_seconds if training_seconds > 0 else math.inf
    print(f"test accuracy: {100.0 * accuracies[-1]:.1f}%")
    epochs = f"{args.epochs} epoch" + ("" if args.epochs == 1 else "s")
    print(
        f"training: {epochs} of {data.x_train.shape[0]} samples in "
        f"{training_seconds:.2f} s ({throughput:,.0f} samples/s)"
    )
    print(f"wall time: {time.perf_counter() - wall_start:.2f} s")


def run_train(args):
    """Run ``nnback train`` and return the exit status."""
    wall_start = time.perf_counter()
    progress = ProgressBar(args.epochs, sys.stderr)
    saver = _ModelSaver(args.save)

    # The handlers cover the checks and the loading too, so that an interrupt
    # at any point reports what the --save file contains.
    try:
        _check_train_outputs(args)
        data = _load_checked_training_data(args)
        model, losses, accuracies, training_seconds = train_model(
            args, data, progress, saver if args.checkpoint else None
        )
        if args.save is not None:
            # With --checkpoint the last epoch is saved already.
            if saver.saved_epoch != args.epochs:
                saver(args.epochs, model)
            print(f"saved the model to {args.save}", file=sys.stderr)
        if args.plot is not None:
            from nnback.plotting import plot_history

            with _reporting_io_errors():
                plot_history(losses, accuracies, args.plot)
            print(f"saved the plot to {args.plot}", file=sys.stderr)
        _print_training_summary(args, data, accuracies, training_seconds, wall_start)
    except CommandError:
        # main prints the message, which must start on a line of its own.
        progress.end_line()
        raise
    except NonFiniteLossError as exc:
        progress.end_line()
        print(f"{PROG}: error: {exc}{saver.note()}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        _ignore_further_interrupts()
        progress.end_line()
        print(f"{PROG}: interrupted{saver.note()}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _saved_model_note(path, saved_epoch):
    """Return the end of a message that states what the --save file contains after an early stop."""
    if path is None:
        return ""
    if saved_epoch is None:
        return f"; nothing was saved to {path}"
    return f"; {path} holds the model after epoch {saved_epoch}"


# ---------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------


def _load_model(path):
    from nnback.serialization import load

    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory, expected a model .npz file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    # load raises ValueError for a malformed file. The other errors here are
    # caught too, so that no malformed file can end the command with a traceback.
    try:
        return load(path)
    except (KeyError, EOFError, TypeError, RecursionError) as exc:
        raise ValueError(f"{path}: not a valid nnback model file: {exc}") from exc
    except MemoryError as exc:
        raise ValueError(
            f"{path}: not enough memory to build the model that the file describes"
        ) from exc


def _input_features(model):
    """Return the number of input features of the model's first Linear layer, or None."""
    for layer in model.layers:
        weight = getattr(layer, "weight", None)
        if weight is not None:
            return weight.data.shape[0]
    return None


def write_predictions(predictions, path):
    """Write int64 class predictions to ``path``, or to stdout if ``path`` is None.

    The format follows the extension: .npy writes the array, .csv a column with
    the header ``prediction``, and any other name one label per line. A regular
    file is replaced atomically: the content goes to a temporary file in the
    same directory that is renamed over ``path`` only after a complete write, so
    a failed write leaves an existing file unchanged. A device or FIFO (such as
    /dev/stdout) is written to directly.
    """
    if path is None:
        _write_prediction_lines(sys.stdout, predictions)
        return

    extension = os.path.splitext(path)[1].lower()
    if extension == ".npy":
        # np.save would append ".npy" to a file name without it, but a file
        # object is written as is.
        def write(file):
            np.save(file, predictions, allow_pickle=False)
        binary = True
    else:
        header = "prediction\n" if extension == ".csv" else ""

        def write(file):
            file.write(header)
            _write_prediction_lines(file, predictions)
        binary = False

    if _is_special_file(path):
        encoding = None if binary else "ascii"
        with open(path, "wb" if binary else "w", encoding=encoding) as file:
            write(file)
        return
    atomic_write(path, write, binary=binary, encoding="ascii")


def _write_prediction_lines(file, predictions):
    """Write one label per line to the text stream ``file``, EVALUATION_CHUNK labels per call.

    One write call per chunk bounds the size of the joined text. It also makes
    a pipe whose reader has gone raise BrokenPipeError. With CPython 3.11.7 on
    Linux, one write of several MB to a pipe whose reader closed during the
    write returned without an error, and the text after the first 64 KiB was
    lost.
    """
    for start in range(0, len(predictions), EVALUATION_CHUNK):
        chunk = predictions[start:start + EVALUATION_CHUNK]
        file.write("".join(f"{label}\n" for label in chunk))


def _is_special_file(path):
    """Return whether ``path`` exists and is neither a regular file nor a directory."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def run_predict(args):
    """Run ``nnback predict`` and return the exit status."""
    if args.output is not None:
        _check_not_input("--output", args.output, "--model", args.model)
        _check_not_input("--output", args.output, "--data", args.data)
        if not _is_special_file(args.output):
            _check_output_directory("--output", args.output)
    with _reporting_io_errors():
        model = _load_model(args.model)
        x, y = datasets.load_samples(args.data)
    if x.shape[0] == 0:
        # An empty batch is a valid request, for example from a pipeline that
        # found no new records, so the command writes an empty result and
        # succeeds, but warns because an empty file is often a mistake.
        print(f"{PROG}: warning: no samples in {args.data}", file=sys.stderr)

    n_features = _input_features(model)
    if n_features is not None and x.shape[1] != n_features:
        raise CommandError(
            f"{args.data}: the samples have {x.shape[1]} features but the model in "
            f"{args.model} expects {n_features}"
        )
    x = np.ascontiguousarray(x, dtype=model.dtype)
    predictions = predict_classes(model, x)
    if args.output is None:
        with _reporting_io_errors():
            write_predictions(predictions, None)
    else:
        try:
            write_predictions(predictions, args.output)
        except BrokenPipeError:
            # A FIFO or /dev/stdout whose reader has gone, handled as for stdout.
            raise
        except (OSError, ValueError) as exc:
            # An OSError from a failed write often has no file name (for
            # example "[Errno 27] File too large"), so the message adds it.
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise CommandError(
                f"--output {args.output}: writing the predictions failed: {reason}"
            ) from exc

    if args.output is not None:
        print(f"wrote {len(predictions)} predictions to {args.output}", file=sys.stderr)
    if y is not None and len(y):
        accuracy = float(np.mean(predictions == y))
        print(f"accuracy: {100.0 * accuracy:.1f}% ({len(y)} samples)", file=sys.stderr)
    return 0


def run_check(args):
    """Run ``nnback check`` and return the exit status: 0 if every check passed, else 1."""
    from nnback import selfcheck

    return 0 if selfcheck.run(sys.stdout, verbose=args.verbose, seed=args.seed) else EXIT_FAILURE


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------


def _ignore_further_interrupts():
    """Ignore SIGINT from now on, so that a second Ctrl-C cannot break off the exit.

    A KeyboardInterrupt raised while the interpreter unwinds or shuts down
    would end the process by SIGINT instead of with exit status 130.
    """
    while True:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            return
        except KeyboardInterrupt:
            # signal.signal runs the handler of a pending SIGINT before it
            # changes the handler, so the call is repeated.
            continue
        except ValueError:
            # signal.signal works only in the main thread. An interrupt raised
            # in main called from another thread came from the caller, not
            # from a signal.
            return


def _thread_limit(n_threads):
    """Return a context that limits BLAS and OpenMP threads to ``n_threads`` (None: no limit)."""
    if n_threads is None:
        return contextlib.nullcontext()
    from nnback.parallelism import threads

    return threads(n_threads)


def main(argv=None):
    """Run the ``nnback`` command and return its exit status.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name. None means ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success, 1 if training failed (a non-finite loss), a check failed
        or stdout was closed, 2 for invalid options or input, and 130 after
        Ctrl-C. ``--help``, ``--version`` and usage errors raise SystemExit
        from argparse instead.

    After Ctrl-C (a KeyboardInterrupt) it prints ``nnback: interrupted`` and
    returns 130, and SIGINT stays ignored from then on, so that a second Ctrl-C
    cannot end the exiting process by signal. A caller that goes on running
    can restore the handler with ``signal.signal``.

    When the reader of stdout closes the pipe (as ``nnback check | head -3``
    does), it returns 1 without a message, as the note on SIGPIPE in the
    documentation of Python's signal module recommends. stdout is then
    redirected to os.devnull, so that the interpreter's final flush of the
    output still in its buffer does not fail too.
    """
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            # --help and --version print to stdout, then exit.
            sys.stdout.flush()
            raise
        with _thread_limit(args.threads):
            status = args.run(args)
        # Output still in the buffer would otherwise be written at interpreter
        # exit, where a closed pipe prints "Exception ignored ... BrokenPipeError"
        # and makes the exit status 120.
        sys.stdout.flush()
        return status
    except CommandError as exc:
        print(f"{PROG}: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print(f"{PROG}: error: out of memory", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        _ignore_further_interrupts()
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_FAILURE


def _discard_stdout():
    """Point the file descriptor of sys.stdout at os.devnull, so that later writes succeed."""
    try:
        stdout_fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        # A replaced sys.stdout without a file descriptor, as under pytest's capture.
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stdout_fd)
    finally:
        os.close(devnull)


def _describe_error(exc):
    """Return the message of a loading error, with the file name if the OS error has one."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def _one_line(message):
    return " ".join(message.split())
