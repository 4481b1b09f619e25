"""Plot training curves with matplotlib.

matplotlib is an optional dependency (the ``examples`` extra). It is imported only
when a plot is drawn, and always with the non-interactive Agg backend, so plotting
works without a display.
"""

import os


def require_matplotlib():
    """Import matplotlib with the Agg backend and return ``matplotlib.pyplot``.

    Raises ImportError with installation advice when matplotlib is missing.
    """
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(
            "plotting requires matplotlib, which is not installed: install it with "
            "'pip install matplotlib'"
        ) from exc

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def plot_history(losses, accuracies, path, *, accuracy_label="test accuracy"):
    """Draw the loss and the accuracy per epoch side by side and save the figure.

    ``losses`` and ``accuracies`` have one value per epoch, the accuracy as a
    fraction in [0, 1]. The file format follows the extension of ``path`` (.png,
    .pdf, .svg and the others that matplotlib supports).
    """
    if len(losses) != len(accuracies):
        raise ValueError(
            f"losses has {len(losses)} values and accuracies has {len(accuracies)}: "
            f"expected one of each per epoch"
        )
    pyplot = require_matplotlib()

    epochs = range(1, len(losses) + 1)
    figure, (loss_axes, accuracy_axes) = pyplot.subplots(1, 2, figsize=(10, 4))
    try:
        loss_axes.plot(epochs, losses, marker="o", markersize=3)
        loss_axes.set_xlabel("epoch")
        loss_axes.set_ylabel("training loss")
        loss_axes.set_title("Loss")
        loss_axes.grid(True, alpha=0.3)

        percentages = [100.0 * value for value in accuracies]
        accuracy_axes.plot(epochs, percentages, marker="o", markersize=3, color="tab:green")
        accuracy_axes.set_xlabel("epoch")
        accuracy_axes.set_ylabel(f"{accuracy_label} (%)")
        accuracy_axes.set_title("Accuracy")
        accuracy_axes.grid(True, alpha=0.3)

        figure.tight_layout()
        figure.savefig(os.fspath(path))
    finally:
        pyplot.close(figure)
