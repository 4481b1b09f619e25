"""Save and load :class:`nnback.layers.Sequential` models as ``.npz`` archives.

File format, version 1
----------------------
An uncompressed NumPy ``.npz`` archive (a zip file of ``.npy`` arrays) with
these entries, and no others:

``nnback_format_version``
    0-d int64 array, ``1``.
``nnback_architecture``
    1-D uint8 array with the UTF-8 bytes of a JSON object::

        {"dtype": "float32",
         "layers": [{"kind": "linear", "in_features": 4, "out_features": 8, "bias": true},
                    {"kind": "relu"},
                    {"kind": "linear", "in_features": 8, "out_features": 3, "bias": true}],
         "nnback_version": "0.1.0"}

    ``kind`` is one of ``linear``, ``relu``, ``sigmoid`` and ``tanh``. ``dtype``
    is ``float32`` or ``float64``, or null for a model without Linear layers.
    ``nnback_version`` records the writer and is not checked.
``layers.<i>.weight``, ``layers.<i>.bias``
    The parameters of the Linear layer at position ``i`` of the layer list,
    shapes (in_features, out_features) and (out_features,), in the model dtype.
    ``bias`` is absent for a layer without bias.

Each entry is a ``.npy`` file named ``<entry>.npy`` inside the zip archive.
``np.savez`` writes uncompressed entries, and :func:`load` also reads entries
compressed by ``np.savez_compressed``.

Loading
-------
:func:`load` reads with ``allow_pickle=False`` and checks a file in this order,
raising ValueError at the first problem:

1. the zip member names: the two entries above must be present, every other
   entry must be named ``layers.<i>.weight`` or ``layers.<i>.bias``, and no
   name may appear twice;
2. the version entry and the architecture entry (at most
   ``MAX_ARCHITECTURE_BYTES`` bytes of JSON), including the type and range of
   every field and the chaining of the Linear sizes;
3. the set of parameter entries against the architecture, and the shape and
   dtype of each from its ``.npy`` header, together with the entry's declared
   size;
4. only then the parameter data, which is read straight into the new layers.

So no array is read, and no layer is built, before its shape is known to
match the architecture. The data of an uncompressed entry must fit in the
file, so for such files the parameters that :func:`load` allocates take at
most about twice the file's size (a byte-swapped array is converted with one
copy). No entry is ever unpickled, because only floating-point and integer
dtypes pass the header checks.

NOTE: a compressed entry may legitimately expand far beyond its stored size,
so for compressed files the allocation is bounded only by the shapes that the
architecture declares. :func:`load` rejects a file whose parameters together
declare more bytes than the memory of the machine (the physical memory, or
the cgroup v2 limit when that is lower).

Paths are used exactly as given: unlike ``np.savez``, :func:`save` does not
append ``.npz`` to a path without that suffix.
"""

import contextlib
import errno
import json
import math
import os
import re
import reprlib
import tokenize
import zipfile
import zlib

import numpy as np

import nnback
from nnback import datasets
from nnback._files import atomic_write, read_regular_file_start
from nnback._validation import MAX_BLAS_DIMENSION
from nnback.layers import Linear, ReLU, Sequential, Sigmoid, Tanh

__all__ = ["FORMAT_VERSION", "save", "load"]

FORMAT_VERSION = 1

VERSION_KEY = "nnback_format_version"
ARCHITECTURE_KEY = "nnback_architecture"

# Upper bound on the size of the architecture JSON. A Linear entry takes about
# 80 bytes, so this allows thousands of layers while capping what load reads
# and parses before it has checked anything.
MAX_ARCHITECTURE_BYTES = 2**20

_MEMBER_SUFFIX = ".npy"
_PARAMETER_NAME = re.compile(r"layers\.(0|[1-9][0-9]*)\.(weight|bias)")

_ACTIVATION_KINDS = {ReLU: "relu", Sigmoid: "sigmoid", Tanh: "tanh"}
_ACTIVATION_CLASSES = {kind: cls for cls, kind in _ACTIVATION_KINDS.items()}
_LAYER_KEYS = {
    "linear": {"kind", "in_features", "out_features", "bias"},
    "relu": {"kind"},
    "sigmoid": {"kind"},
    "tanh": {"kind"},
}
_DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}

# Every zip file starts with a local file header, or with the end-of-directory
# record when it has no entries.
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")

# Errors that NumPy and zipfile raise for a damaged or foreign archive.
# RuntimeError covers encrypted entries, and its subclass NotImplementedError
# unsupported compression methods. numpy.lib.format lets tokenize.TokenError
# escape from some malformed .npy headers, such as an unterminated string, and
# raises TypeError for a header dict whose keys cannot be sorted (bytes and str).
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile, zlib.error, EOFError, ValueError, RuntimeError, tokenize.TokenError,
    TypeError,
)


def _array_name(index, parameter):
    return f"layers.{index}.{parameter}"


# ---------------------------------------------------------------------------
# Save
# ---------------------------------------------------------------------------


def _model_entries(model):
    """Return the archive entries of ``model``: name to array."""
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a Sequential, got {type(model).__name__}")

    layers = []
    entries = {}
    for index, layer in enumerate(model.layers):
        if isinstance(layer, Linear):
            layers.append({
                "kind": "linear",
                "in_features": layer.in_features,
                "out_features": layer.out_features,
                "bias": layer.bias is not None,
            })
            entries[_array_name(index, "weight")] = layer.weight.data
            if layer.bias is not None:
                entries[_array_name(index, "bias")] = layer.bias.data
        elif type(layer) in _ACTIVATION_KINDS:
            layers.append({"kind": _ACTIVATION_KINDS[type(layer)]})
        else:
            raise TypeError(
                f"cannot save layers[{index}] of type {type(layer).__name__}: the file "
                f"format stores only Linear, ReLU, Sigmoid and Tanh layers"
            )

    dtype = model.dtype
    architecture = {
        "dtype": None if dtype is None else dtype.name,
        "layers": layers,
        "nnback_version": nnback.__version__,
    }
    text = json.dumps(architecture, sort_keys=True)
    entries[ARCHITECTURE_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    entries[VERSION_KEY] = np.array(FORMAT_VERSION, dtype=np.int64)
    return entries


def save(model: Sequential, path: str | os.PathLike[str]) -> None:
    """Write ``model`` to the ``.npz`` file ``path``, atomically.

    The archive is written to a temporary file in the target's directory,
    flushed with ``os.fsync`` and renamed over ``path`` with ``os.replace``
    (see :func:`nnback._files.atomic_write`). A reader therefore sees either
    the old file or the complete new one. If anything fails, the temporary file
    is removed and an existing file at ``path`` is left unchanged. An existing
    file keeps its permission bits, and a symbolic link at ``path`` keeps
    pointing to the file it names, which is replaced.

    Parameters
    ----------
    model : Sequential
        Made of Linear, ReLU, Sigmoid and Tanh layers.
    path : str or os.PathLike
        Written exactly as given: no ``.npz`` suffix is appended.

    Raises
    ------
    TypeError
        For a model that is not a Sequential or has another kind of layer.
    ValueError
        If ``path`` is empty or names an existing file that is not a regular file.
    FileNotFoundError
        If the directory of ``path`` does not exist.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from nnback import mlp
    >>> from nnback.serialization import load, save
    >>> model = mlp([4, 8, 3], rng=0)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "model.npz")
    ...     save(model, path)
    ...     restored = load(path)
    >>> x = np.ones((2, 4), dtype=np.float32)
    >>> np.array_equal(restored.predict(x), model.predict(x))
    True
    """
    path = os.fsdecode(os.fspath(path))
    if not path:
        raise ValueError("path is empty")
    entries = _model_entries(model)

    def write_archive(file):
        np.savez(file, **entries)

    atomic_write(path, write_archive)


# ---------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------


def _short(value):
    """Return a repr of a JSON value that is cut short if it is long or deeply nested."""
    return reprlib.repr(value)


@contextlib.contextmanager
def _reading_archive(path):
    """Convert the errors of a damaged or foreign archive into a ValueError naming ``path``."""
    try:
        yield
    except (*_ARCHIVE_ERRORS, OSError) as error:
        # zipfile seeks to the offsets that the archive records, and a negative
        # one fails with EINVAL. Other OSErrors are real I/O errors.
        if isinstance(error, OSError) and error.errno != errno.EINVAL:
            raise
        raise ValueError(
            f"{path!r} is not a readable nnback model file: reading the .npz archive "
            f"failed ({type(error).__name__}: {error}). The file may be truncated or damaged"
        ) from error


class _ArrayHeader:
    """The parsed ``.npy`` header of an entry: shape, dtype and header length in bytes."""

    __slots__ = ("shape", "dtype", "size")

    def __init__(self, shape, dtype, size):
        self.shape = shape
        self.dtype = dtype
        self.size = size

    @property
    def data_size(self):
        """Number of bytes of array data that follow the header."""
        return math.prod(self.shape) * self.dtype.itemsize


class _Archive:
    """An open .npz archive whose entries are read one at a time, header first."""

    def __init__(self, path, archive):
        self.path = path
        self.archive = archive
        self.file_size = os.path.getsize(path)
        self.members = self._list_members()

    def _list_members(self):
        """Return a dict of entry name (without ``.npy``) to ZipInfo, after checking the names."""
        members = {}
        unknown = []
        for info in self.archive.infolist():
            name = info.filename
            entry = name[: -len(_MEMBER_SUFFIX)] if name.endswith(_MEMBER_SUFFIX) else None
            if entry is None or not (
                entry in (VERSION_KEY, ARCHITECTURE_KEY) or _PARAMETER_NAME.fullmatch(entry)
            ):
                unknown.append(name)
                continue
            if entry in members:
                raise ValueError(
                    f"{self.path!r}: the archive contains the entry {name!r} more than once"
                )
            members[entry] = info

        if VERSION_KEY not in members or ARCHITECTURE_KEY not in members:
            names = sorted(info.filename for info in self.archive.infolist())
            raise ValueError(
                f"{self.path!r} is not an nnback model file: it has no {VERSION_KEY!r} or "
                f"{ARCHITECTURE_KEY!r} entry (entries: {_short(names)})"
            )
        if unknown:
            raise ValueError(
                f"{self.path!r}: the archive contains entries that an nnback model file "
                f"never has: {_short(sorted(unknown))}"
            )
        return members

    def header(self, entry):
        """Return the _ArrayHeader of ``entry``, reading only the start of its data."""
        with _reading_archive(self.path):
            with self.archive.open(self.members[entry]) as stream:
                version = np.lib.format.read_magic(stream)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
                else:
                    raise ValueError(f"the .npy format version {version} of {entry!r} is not supported")
                return _ArrayHeader(shape, dtype, stream.tell())

    def check_size(self, entry, header):
        """Raise ValueError unless the zip record of ``entry`` has room for exactly the data of ``header``."""
        info = self.members[entry]
        expected = header.size + header.data_size
        if info.file_size != expected:
            raise ValueError(
                f"{self.path!r} is not a readable nnback model file: the entry {entry!r} "
                f"declares {info.file_size} bytes, but its .npy header describes {expected}. "
                f"The file may be truncated or damaged"
            )
        if info.compress_type != zipfile.ZIP_STORED:
            return
        if info.compress_size != info.file_size:
            raise ValueError(
                f"{self.path!r} is not a readable nnback model file: the uncompressed entry "
                f"{entry!r} stores {info.compress_size} bytes for {info.file_size} bytes of "
                f"data. The file may be damaged"
            )
        if info.header_offset + info.compress_size > self.file_size:
            raise ValueError(
                f"{self.path!r} is not a readable nnback model file: the uncompressed entry "
                f"{entry!r} of {info.file_size} bytes does not fit in the file of "
                f"{self.file_size} bytes. The file may be truncated or damaged"
            )

    def read(self, entry, header):
        """Return the array of ``entry``, whose ``header`` has been checked by the caller."""
        self.check_size(entry, header)
        with _reading_archive(self.path):
            with self.archive.open(self.members[entry]) as stream:
                return np.lib.format.read_array(stream, allow_pickle=False)


def _read_version(archive):
    path = archive.path
    header = archive.header(VERSION_KEY)
    if header.shape != () or header.dtype.kind not in "iu":
        raise ValueError(
            f"{path!r}: {VERSION_KEY} must be an integer scalar, got dtype {header.dtype} "
            f"and shape {header.shape}"
        )
    version = int(archive.read(VERSION_KEY, header))
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path!r} has format version {version}, but this nnback "
            f"({nnback.__version__}) reads only version {FORMAT_VERSION}"
        )


def _read_architecture(archive):
    """Return the architecture dict, with every field's type and range checked."""
    path = archive.path
    header = archive.header(ARCHITECTURE_KEY)
    if header.dtype != np.uint8 or len(header.shape) != 1:
        raise ValueError(
            f"{path!r}: {ARCHITECTURE_KEY} must be a 1-D uint8 array, got dtype {header.dtype} "
            f"and shape {header.shape}"
        )
    if header.shape[0] > MAX_ARCHITECTURE_BYTES:
        raise ValueError(
            f"{path!r}: {ARCHITECTURE_KEY} has {header.shape[0]} bytes, more than the "
            f"limit of {MAX_ARCHITECTURE_BYTES}"
        )
    raw = archive.read(ARCHITECTURE_KEY, header)
    try:
        architecture = json.loads(raw.tobytes().decode("utf-8"))
    except RecursionError as error:
        raise ValueError(
            f"{path!r}: {ARCHITECTURE_KEY} nests JSON arrays or objects too deeply to parse"
        ) from error
    except ValueError as error:
        # UnicodeDecodeError, JSONDecodeError, and integers with too many digits.
        raise ValueError(f"{path!r}: {ARCHITECTURE_KEY} is not valid UTF-8 JSON: {error}") from error

    if not isinstance(architecture, dict) or not isinstance(architecture.get("layers"), list):
        raise ValueError(f"{path!r}: the architecture must be a JSON object with a 'layers' list")
    dtype_name = architecture.get("dtype")
    if dtype_name is not None and (not isinstance(dtype_name, str) or dtype_name not in _DTYPES):
        raise ValueError(
            f"{path!r}: the architecture has dtype {_short(dtype_name)}, expected 'float32', "
            f"'float64' or null"
        )
    if not architecture["layers"]:
        raise ValueError(f"{path!r}: the architecture lists no layers")

    for index, spec in enumerate(architecture["layers"]):
        _check_layer_spec(path, index, spec, dtype_name)
    _check_layer_chain(path, architecture["layers"])
    return architecture


def _check_layer_spec(path, index, spec, dtype_name):
    if not isinstance(spec, dict):
        raise ValueError(f"{path!r}: layers[{index}] must be a JSON object, got {_short(spec)}")
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in _LAYER_KEYS:
        raise ValueError(
            f"{path!r}: layers[{index}] has kind {_short(kind)}, expected one of "
            f"{sorted(_LAYER_KEYS)}"
        )
    if set(spec) != _LAYER_KEYS[kind]:
        raise ValueError(
            f"{path!r}: layers[{index}] ({kind}) has the keys {_short(sorted(spec))}, expected "
            f"{sorted(_LAYER_KEYS[kind])}"
        )
    if kind != "linear":
        return

    for key in ("in_features", "out_features"):
        value = spec[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_BLAS_DIMENSION:
            raise ValueError(
                f"{path!r}: layers[{index}].{key} must be a non-negative integer of at most "
                f"{MAX_BLAS_DIMENSION}, got {_short(value)}"
            )
    if not isinstance(spec["bias"], bool):
        raise ValueError(
            f"{path!r}: layers[{index}].bias must be true or false, got {_short(spec['bias'])}"
        )
    if dtype_name is None:
        raise ValueError(f"{path!r}: the architecture has Linear layers but no dtype")


def _check_layer_chain(path, specs):
    """Raise ValueError unless each Linear layer takes as many features as the previous one outputs."""
    previous_index, previous_out = None, None
    for index, spec in enumerate(specs):
        if spec["kind"] != "linear":
            continue
        if previous_out is not None and spec["in_features"] != previous_out:
            raise ValueError(
                f"{path!r}: the architecture is not a valid model: layers[{index}] takes "
                f"{spec['in_features']} features, but layers[{previous_index}] outputs "
                f"{previous_out}"
            )
        previous_index, previous_out = index, spec["out_features"]


def _expected_arrays(architecture):
    """Return a dict of parameter entry name to the shape that the architecture gives it."""
    expected: dict[str, tuple[int, ...]] = {}
    for index, spec in enumerate(architecture["layers"]):
        if spec["kind"] != "linear":
            continue
        expected[_array_name(index, "weight")] = (spec["in_features"], spec["out_features"])
        if spec["bias"]:
            expected[_array_name(index, "bias")] = (spec["out_features"],)
    return expected


def _check_parameter_headers(archive, expected, dtype):
    """Check the parameter entries against the architecture and return their headers by name."""
    path = archive.path
    present = set(archive.members) - {VERSION_KEY, ARCHITECTURE_KEY}
    for name in expected:
        if name not in present:
            raise ValueError(f"{path!r}: the array {name!r} is missing")
    unexpected = sorted(present - set(expected))
    if unexpected:
        raise ValueError(
            f"{path!r}: the arrays {_short(unexpected)} do not belong to the architecture"
        )

    headers = {}
    for name, shape in expected.items():
        header = archive.header(name)
        # Any byte order is accepted, so that a file written on a machine of
        # the other endianness loads too. The layer converts it once.
        if header.dtype.kind != "f" or header.dtype.itemsize != dtype.itemsize:
            raise ValueError(
                f"{path!r}: the array {name!r} has dtype {header.dtype}, expected {dtype}"
            )
        if header.shape != shape:
            raise ValueError(
                f"{path!r}: the array {name!r} has shape {header.shape}, but the architecture "
                f"needs {shape}"
            )
        archive.check_size(name, header)
        headers[name] = header
    _check_total_size(path, headers)
    return headers


def _check_total_size(path, headers):
    """Raise ValueError if the parameters would need more bytes than this machine's memory.

    A compressed entry can declare far more data than the file stores, so
    this check runs before any parameter is allocated.
    """
    total = sum(header.data_size for header in headers.values())
    limit = datasets._memory_limit_bytes()
    if limit is not None and total > limit:
        raise ValueError(
            f"{path!r}: the parameters declare {datasets._format_bytes(total)} of data, more "
            f"than the {datasets._format_bytes(limit)} of memory of this machine. The file may "
            f"be damaged or crafted"
        )


def _build_model(archive, architecture, headers):
    """Read the parameter arrays into new layers and return the Sequential."""
    layers = []
    for index, spec in enumerate(architecture["layers"]):
        if spec["kind"] != "linear":
            layers.append(_ACTIVATION_CLASSES[spec["kind"]]())
            continue
        weight_name = _array_name(index, "weight")
        weight = archive.read(weight_name, headers[weight_name])
        bias = None
        if spec["bias"]:
            bias_name = _array_name(index, "bias")
            bias = archive.read(bias_name, headers[bias_name])
        layers.append(Linear._from_arrays(weight, bias))

    try:
        return Sequential(*layers)
    except ValueError as error:
        raise ValueError(f"{archive.path!r}: the architecture is not a valid model: {error}") from error


def _read_signature(path):
    """Return the first 4 bytes of the file at ``path``, which must be a regular file."""
    return read_regular_file_start(
        path, 4, f"{path!r} is not an nnback model file: it is not a regular file"
    )


def load(path: str | os.PathLike[str]) -> Sequential:
    """Read a model written by :func:`save` and return it as a new Sequential.

    Every entry name, the architecture and each array's shape and dtype are
    checked before any parameter data is read (see the module documentation).

    Parameters
    ----------
    path : str or os.PathLike
        Read exactly as given.

    Returns
    -------
    Sequential
        A new model with the saved layers, dtype and parameter values.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    IsADirectoryError
        If ``path`` is a directory.
    ValueError
        If ``path`` is not a regular file (a FIFO or a device), or the file is
        not an nnback model (another .npz archive, a text file),
        is truncated or damaged, has an unknown format version, or contains
        entries whose names, shapes or dtypes do not match its architecture,
        or declares more parameter data than the memory of the machine.
        The message names the file and the entry or architecture field.

    Examples
    --------
    >>> import os, tempfile
    >>> import nnback
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "model.npz")
    ...     nnback.mlp([2, 5, 2], activation="sigmoid", dtype="float64", rng=0).save(path)
    ...     model = nnback.load(path)
    >>> model
    Sequential(
      Linear(2, 5, bias=True, dtype=float64),
      Sigmoid(),
      Linear(5, 2, bias=True, dtype=float64)
    )
    """
    path = os.fsdecode(os.fspath(path))
    signature = _read_signature(path)
    if signature not in _ZIP_SIGNATURES:
        raise ValueError(
            f"{path!r} is not an nnback model file: it is not a .npz (zip) archive"
        )

    with _reading_archive(path):
        zip_file = zipfile.ZipFile(path)
    with zip_file:
        archive = _Archive(path, zip_file)
        _read_version(archive)
        architecture = _read_architecture(archive)
        dtype = _DTYPES.get(architecture["dtype"])
        headers = _check_parameter_headers(archive, _expected_arrays(architecture), dtype)
        return _build_model(archive, architecture, headers)
