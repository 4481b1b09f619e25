"""Run the doctests of the public nnback modules and check docstring coverage.

The modules are imported by name, so the tests read the installed package.
Each doctest is a separate test case, named by the qualified name of the object
whose docstring contains it. The coverage tests require a docstring on every
public function, class, method and property, a Parameters section wherever a
callable takes arguments, and a Returns section wherever it returns a value.
"""

import ast
import doctest
import importlib
import inspect
import io
import re
import textwrap

import numpy as np
import pytest

PUBLIC_MODULES = (
    "nnback",
    "nnback.functional",
    "nnback.reference",
    "nnback.layers",
    "nnback.optim",
    "nnback.training",
    "nnback.serialization",
    "nnback.parallelism",
    "nnback.estimator",
    "nnback.datasets",
    "nnback.plotting",
    "nnback.selfcheck",
    "nnback.cli",
)

# Modules whose import needs an optional dependency.
OPTIONAL_DEPENDENCIES = {"nnback.estimator": "sklearn"}

# Doctests that need an optional dependency, by name prefix.
DOCTEST_DEPENDENCIES = {
    "nnback.datasets.load_digits": "sklearn",
    "nnback.plotting": "matplotlib",
}

# NumPy's default print options, fixed so that a changed global setting cannot
# change the expected output.
PRINT_OPTIONS = {
    "precision": 8,
    "threshold": 1000,
    "edgeitems": 3,
    "linewidth": 75,
    "suppress": False,
    "sign": "-",
    "floatmode": "maxprec",
    "legacy": False,
}

DOCTEST_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

SECTION_PATTERN = r"^{name}\n-{{3,}}$"


def _importable_modules():
    """Return the public modules whose optional dependencies are installed."""
    modules = []
    for name in PUBLIC_MODULES:
        dependency = OPTIONAL_DEPENDENCIES.get(name)
        if dependency is not None:
            try:
                importlib.import_module(dependency)
            except ImportError:
                continue
        modules.append(importlib.import_module(name))
    return modules


def _collect_doctests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = []
    for module in _importable_modules():
        for test in finder.find(module, module.__name__):
            if test.examples:
                tests.append(test)
    return sorted(tests, key=lambda test: test.name)


DOCTESTS = _collect_doctests()


def test_doctests_were_collected():
    # Every public module except the package itself carries examples.
    modules_with_examples = {test.name.split(".")[1] for test in DOCTESTS if "." in test.name}
    expected = {module.__name__.split(".")[1] for module in _importable_modules() if "." in module.__name__}
    assert expected <= modules_with_examples, sorted(expected - modules_with_examples)


@pytest.mark.parametrize("test", DOCTESTS, ids=[test.name for test in DOCTESTS])
def test_doctest(test, tmp_path, monkeypatch):
    for prefix, dependency in DOCTEST_DEPENDENCIES.items():
        if test.name.startswith(prefix):
            pytest.importorskip(dependency)
    # An example that writes a file into the working directory writes it here.
    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(optionflags=DOCTEST_FLAGS)
    report = io.StringIO()
    with np.printoptions(**PRINT_OPTIONS):
        result = runner.run(test, out=report.write)
    assert result.failed == 0, report.getvalue()


# ---------------------------------------------------------------------------
# Docstring coverage
# ---------------------------------------------------------------------------


def _public_names(module):
    names = getattr(module, "__all__", None)
    if names is None:
        names = [name for name in vars(module) if not name.startswith("_")]
    return names


def _is_own(obj, module_name):
    """Return whether ``obj`` is defined in ``module_name`` (not imported into it)."""
    return getattr(obj, "__module__", None) == module_name


def _public_callables(module):
    """Yield (qualified name, object) for the public functions and classes of ``module``.

    Names listed in ``__all__`` count even when they are defined in another nnback
    module, and names without ``__all__`` count only where they are defined.
    """
    has_all = hasattr(module, "__all__")
    for name in _public_names(module):
        obj = getattr(module, name)
        if inspect.ismodule(obj) or not callable(obj):
            continue
        if not has_all and not _is_own(obj, module.__name__):
            continue
        yield f"{module.__name__}.{name}", obj


def _public_members(cls):
    """Yield (name, function or property) for the public members that nnback defines on ``cls``."""
    for klass in cls.__mro__:
        if not klass.__module__.startswith("nnback"):
            continue
        for name, member in vars(klass).items():
            if name.startswith("_"):
                continue
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if isinstance(member, property) or inspect.isfunction(member):
                yield name, member


def _defined_name(obj):
    """Return ``module.qualname`` of a function or class, or None if it has no such names."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if module is None or qualname is None:
        return None
    return f"{module}.{qualname}"


def _documented_objects():
    seen = {}
    for module in _importable_modules():
        for exported_name, obj in _public_callables(module):
            # Objects exported by the package are named where they are defined.
            qualified_name = _defined_name(obj) or exported_name
            seen.setdefault(id(obj), (qualified_name, obj))
            if inspect.isclass(obj):
                for name, member in _public_members(obj):
                    seen.setdefault(id(member), (f"{qualified_name}.{name}", member))
    return sorted(seen.values(), key=lambda item: item[0])


DOCUMENTED = _documented_objects()


def _has_section(docstring, name):
    return re.search(SECTION_PATTERN.format(name=name), docstring, re.MULTILINE) is not None


def _arguments(obj):
    """Return the names of the arguments a caller passes, without self and cls."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    return [name for name in signature.parameters if name not in ("self", "cls")]


def _returns_value(function):
    """Return whether ``function``'s own body has a ``return`` with a value that is not None."""
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        return False
    tree = ast.parse(source)
    definition = tree.body[0]

    pending = list(definition.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, ast.Return) and node.value is not None:
            if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                return True
        pending.extend(ast.iter_child_nodes(node))
    return False


@pytest.mark.parametrize("obj", [obj for _, obj in DOCUMENTED], ids=[name for name, _ in DOCUMENTED])
def test_public_object_has_docstring(obj):
    docstring = inspect.getdoc(obj.fget if isinstance(obj, property) else obj)
    assert docstring, "missing docstring"


def _is_exception(obj):
    return inspect.isclass(obj) and issubclass(obj, BaseException)


# nnback raises its exceptions, and their Attributes section documents the
# values that a caller reads, so their constructor arguments are exempt.
CALLABLES = [
    (name, obj) for name, obj in DOCUMENTED
    if not isinstance(obj, property) and not _is_exception(obj)
]


@pytest.mark.parametrize(
    "obj", [obj for _, obj in CALLABLES], ids=[name for name, _ in CALLABLES]
)
def test_public_callable_documents_arguments(obj):
    docstring = inspect.getdoc(obj) or ""
    arguments = _arguments(obj)
    if arguments:
        assert _has_section(docstring, "Parameters"), f"no Parameters section for {arguments}"


@pytest.mark.parametrize(
    "obj",
    [obj for _, obj in DOCUMENTED if inspect.isfunction(obj)],
    ids=[name for name, obj in DOCUMENTED if inspect.isfunction(obj)],
)
def test_public_function_documents_return_value(obj):
    docstring = inspect.getdoc(obj) or ""
    if _returns_value(obj):
        assert _has_section(docstring, "Returns"), "returns a value but has no Returns section"


def test_coverage_check_finds_public_objects():
    names = {name for name, _ in DOCUMENTED}
    assert "nnback.functional.linear_forward" in names
    assert "nnback.layers.Linear.forward" in names
    assert "nnback.optim.SGD.step" in names


def test_section_check_rejects_missing_sections():
    def undocumented(x):
        return x

    assert _returns_value(undocumented)
    assert not _has_section("Compute y.\n\nReturns\n-------\ny : ndarray", "Parameters")
    assert _has_section("Compute y.\n\nParameters\n----------\nx : ndarray", "Parameters")
