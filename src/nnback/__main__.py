"""Run the command line interface: ``python -m nnback train``, ``predict`` or ``check``.

``python -m nnback`` imports the package ``nnback`` before this module runs,
so Ctrl-C during that import still ends the process with a traceback and
death by SIGINT. From the import of ``nnback.cli`` on, Ctrl-C gives one line
``nnback: interrupted`` and exit status 130.
"""

import signal
import sys


def _interrupted():
    """Report Ctrl-C that :func:`nnback.cli.main` did not handle and return exit status 130.

    SIGINT is ignored first, so that a second Ctrl-C cannot end the process by
    signal while it exits.
    """
    while True:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            break
        except KeyboardInterrupt:
            # signal.signal first runs the handler of a pending SIGINT.
            continue
    sys.stderr.write("nnback: interrupted\n")
    return 130


def _run():
    try:
        from nnback.cli import main

        return main()
    except KeyboardInterrupt:
        return _interrupted()


if __name__ == "__main__":
    raise SystemExit(_run())
