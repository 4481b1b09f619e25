"""Run the Python code blocks of docs/guide.md in order, in one namespace.

Each block is a separate test case that continues from the namespace of the
blocks before it, as a reader running the guide in one session would. The
blocks run in a temporary working directory, so files that they write are
removed afterwards.
"""

import pathlib
import re

import pytest

GUIDE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "guide.md"

# A fenced block that starts with ```python on a line of its own.
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _python_blocks():
    text = GUIDE.read_text(encoding="utf-8")
    blocks = []
    for match in PYTHON_BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        blocks.append((line, match.group(1)))
    return blocks


BLOCKS = _python_blocks()


@pytest.fixture(scope="module")
def guide_session(tmp_path_factory):
    """Yield the state that the blocks share, with a temporary working directory.

    The state is the namespace that the blocks run in and the guide line of
    each block that failed.
    """
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.chdir(tmp_path_factory.mktemp("guide"))
    namespace = {"__name__": "guide"}
    yield {"namespace": namespace, "failed": []}
    monkeypatch.undo()


def test_guide_has_python_blocks():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"line-{line}" for line, _ in BLOCKS])
def test_guide_block_runs(guide_session, line, code):
    pytest.importorskip("sklearn")
    # A later block depends on the names of the earlier ones, so it cannot run
    # meaningfully after one of them failed.
    if guide_session["failed"]:
        pytest.fail(f"an earlier block failed (line {guide_session['failed'][0]})")
    try:
        # Leading newlines make traceback line numbers those of the guide.
        padded = "\n" * line + code
        exec(compile(padded, str(GUIDE), "exec"), guide_session["namespace"])
    except BaseException:
        guide_session["failed"].append(line)
        raise
