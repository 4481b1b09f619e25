"""Plot training curves with matplotlib.

matplotlib is an optional dependency (the ``examples`` extra). It is imported only
when a plot is drawn, and always with the non-interactive Agg backend, so plotting
works without a display.
"""

import os


def require_matplotlib():
    """Import matplotlib with the Agg backend and return ``matplotlib.pyplot``.

    Returns
    -------
    module
        ``matplotlib.pyplot``, with the non-interactive Agg backend selected.

    Raises
    ------
    ImportError
        With installation advice, when matplotlib is missing.

    Examples
    --------
    >>> from nnback.plotting import require_matplotlib
    >>> pyplot = require_matplotlib()
    >>> pyplot.get_backend().lower()
    'agg'
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

    The figure has two panels: the training loss and the accuracy in percent,
    each against the epoch counted from 1, with ticks at whole epochs only.

    Parameters
    ----------
    losses : sequence of float
        Training loss of each epoch.
    accuracies : sequence of float
        Accuracy of each epoch as a fraction in [0, 1], plotted in percent.
    path : str or os.PathLike
        Output file. The file format follows its extension (.png, .pdf, .svg
        and the others that matplotlib supports).
    accuracy_label : str, default "test accuracy"
        Label of the accuracy axis, followed by "(%)".

    Raises
    ------
    ValueError
        If ``losses`` and ``accuracies`` differ in length, or matplotlib does
        not know the file extension.
    ImportError
        If matplotlib is not installed.

    Examples
    --------
    >>> import os, tempfile
    >>> from nnback.plotting import plot_history
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "history.png")
    ...     plot_history([0.9, 0.5, 0.3], [0.70, 0.85, 0.91], path)
    ...     os.path.getsize(path) > 0
    True
    """
    if len(losses) != len(accuracies):
        raise ValueError(
            f"losses has {len(losses)} values and accuracies has {len(accuracies)}: "
            f"expected one of each per epoch"
        )
    pyplot = require_matplotlib()
    from matplotlib.ticker import MaxNLocator

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

        # Epochs are whole numbers, so no tick lands between two of them.
        for axes in (loss_axes, accuracy_axes):
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))

        figure.tight_layout()
        figure.savefig(os.fspath(path))
    finally:
        pyplot.close(figure)
