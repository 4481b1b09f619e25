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

No entry is a pickled object, and :func:`load` reads with
``allow_pickle=False``, so loading a file never runs code from it.

Paths are used exactly as given: unlike ``np.savez``, :func:`save` does not
append ``.npz`` to a path without that suffix.
"""

import json
import os
import secrets
import zipfile
import zlib

import numpy as np

import nnback
from nnback.layers import Linear, ReLU, Sequential, Sigmoid, Tanh

__all__ = ["FORMAT_VERSION", "save", "load"]

FORMAT_VERSION = 1

VERSION_KEY = "nnback_format_version"
ARCHITECTURE_KEY = "nnback_architecture"

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
_ARCHIVE_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError)


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


def _create_temporary_file(directory, name):
    """Create and open a new file next to the target, returning (path, binary file object).

    The file is created with mode 0o666 minus the process umask, as ``open``
    would create the target itself, so the final file gets the usual permissions.
    """
    while True:
        path = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.tmp")
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        return path, os.fdopen(descriptor, "wb")


def _sync_directory(directory):
    """Flush the directory entry of a renamed file to disk, where the OS supports it."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        # Some file systems and platforms cannot fsync a directory. The data
        # itself was synced before the rename.
        pass
    finally:
        os.close(descriptor)


def save(model, path):
    """Write ``model`` to the ``.npz`` file ``path``, atomically.

    The archive is written to a temporary file in the target's directory,
    flushed with ``os.fsync`` and renamed over ``path`` with ``os.replace``. A
    reader therefore sees either the old file or the complete new one. If
    anything fails, the temporary file is removed and an existing file at
    ``path`` is left unchanged.

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
    FileNotFoundError
        If the directory of ``path`` does not exist.
    """
    path = os.fsdecode(os.fspath(path))
    entries = _model_entries(model)

    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot save the model to {path!r}: directory {directory!r} does not exist")

    temporary_path, file = _create_temporary_file(directory, os.path.basename(path))
    try:
        with file:
            np.savez(file, **entries)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary_path, path)
    except BaseException:
        try:
            os.unlink(temporary_path)
        except FileNotFoundError:
            pass
        raise
    _sync_directory(directory)


# ---------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------


def _read_archive(path):
    """Return every entry of the .npz archive ``path`` as a dict of name to array.

    Raises ValueError for a file that is not a readable, pickle-free .npz archive.
    """
    with open(path, "rb") as file:
        signature = file.read(4)
    if signature not in _ZIP_SIGNATURES:
        raise ValueError(
            f"{path!r} is not an nnback model file: it is not a .npz (zip) archive"
        )

    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except _ARCHIVE_ERRORS as error:
        raise ValueError(
            f"{path!r} is not a readable nnback model file: reading the .npz archive "
            f"failed ({type(error).__name__}: {error}). The file may be truncated or "
            f"damaged, or contain pickled objects, which nnback files never do"
        ) from error


def _read_version(path, entries):
    if VERSION_KEY not in entries or ARCHITECTURE_KEY not in entries:
        raise ValueError(
            f"{path!r} is not an nnback model file: it has no {VERSION_KEY!r} or "
            f"{ARCHITECTURE_KEY!r} entry (entries: {sorted(entries)})"
        )
    version = entries[VERSION_KEY]
    if version.shape != () or version.dtype.kind not in "iu":
        raise ValueError(
            f"{path!r}: {VERSION_KEY} must be an integer scalar, got dtype {version.dtype} "
            f"and shape {version.shape}"
        )
    if int(version) != FORMAT_VERSION:
        raise ValueError(
            f"{path!r} has format version {int(version)}, but this nnback "
            f"({nnback.__version__}) reads only version {FORMAT_VERSION}"
        )


def _read_architecture(path, entries):
    """Return the architecture dict, with its JSON structure checked."""
    raw = entries[ARCHITECTURE_KEY]
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(
            f"{path!r}: {ARCHITECTURE_KEY} must be a 1-D uint8 array, got dtype {raw.dtype} "
            f"and shape {raw.shape}"
        )
    try:
        architecture = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path!r}: {ARCHITECTURE_KEY} is not valid UTF-8 JSON: {error}") from error

    if not isinstance(architecture, dict) or not isinstance(architecture.get("layers"), list):
        raise ValueError(f"{path!r}: the architecture must be a JSON object with a 'layers' list")
    dtype_name = architecture.get("dtype")
    if dtype_name is not None and dtype_name not in _DTYPES:
        raise ValueError(
            f"{path!r}: the architecture has dtype {dtype_name!r}, expected 'float32' or 'float64'"
        )
    if not architecture["layers"]:
        raise ValueError(f"{path!r}: the architecture lists no layers")

    for index, spec in enumerate(architecture["layers"]):
        _check_layer_spec(path, index, spec, dtype_name)
    return architecture


def _check_layer_spec(path, index, spec, dtype_name):
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind not in _LAYER_KEYS:
        raise ValueError(
            f"{path!r}: layers[{index}] has kind {kind!r}, expected one of "
            f"{sorted(_LAYER_KEYS)}"
        )
    if set(spec) != _LAYER_KEYS[kind]:
        raise ValueError(
            f"{path!r}: layers[{index}] ({kind}) has the keys {sorted(spec)}, expected "
            f"{sorted(_LAYER_KEYS[kind])}"
        )
    if kind != "linear":
        return

    for key in ("in_features", "out_features"):
        value = spec[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"{path!r}: layers[{index}].{key} must be a non-negative integer, got {value!r}"
            )
    if not isinstance(spec["bias"], bool):
        raise ValueError(f"{path!r}: layers[{index}].bias must be true or false, got {spec['bias']!r}")
    if dtype_name is None:
        raise ValueError(f"{path!r}: the architecture has Linear layers but no dtype")


def _checked_array(path, entries, name, shape, dtype):
    if name not in entries:
        raise ValueError(f"{path!r}: the array {name!r} is missing")
    array = entries[name]
    # Any byte order is accepted, so that a file written on a machine of the
    # other endianness loads too. The copy into the layer converts it.
    if array.dtype.kind != "f" or array.dtype.itemsize != dtype.itemsize:
        raise ValueError(f"{path!r}: the array {name!r} has dtype {array.dtype}, expected {dtype}")
    if array.shape != shape:
        raise ValueError(
            f"{path!r}: the array {name!r} has shape {array.shape}, but the architecture "
            f"needs {shape}"
        )
    return array


def _build_model(path, architecture, entries):
    dtype = _DTYPES.get(architecture["dtype"])
    expected_names = {VERSION_KEY, ARCHITECTURE_KEY}
    layers = []
    for index, spec in enumerate(architecture["layers"]):
        if spec["kind"] != "linear":
            layers.append(_ACTIVATION_CLASSES[spec["kind"]]())
            continue

        in_features, out_features = spec["in_features"], spec["out_features"]
        # The seed only avoids drawing OS entropy: the weights are overwritten.
        layer = Linear(in_features, out_features, bias=spec["bias"], dtype=dtype, rng=0)
        weight_name = _array_name(index, "weight")
        layer.weight.data[...] = _checked_array(
            path, entries, weight_name, (in_features, out_features), dtype
        )
        expected_names.add(weight_name)
        if spec["bias"]:
            bias_name = _array_name(index, "bias")
            layer.bias.data[...] = _checked_array(path, entries, bias_name, (out_features,), dtype)
            expected_names.add(bias_name)
        layers.append(layer)

    unexpected = sorted(set(entries) - expected_names)
    if unexpected:
        raise ValueError(f"{path!r}: the arrays {unexpected} do not belong to the architecture")
    try:
        return Sequential(*layers)
    except ValueError as error:
        raise ValueError(f"{path!r}: the architecture is not a valid model: {error}") from error


def load(path):
    """Read a model written by :func:`save` and return it as a new Sequential.

    Parameters
    ----------
    path : str or os.PathLike
        Read exactly as given.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not an nnback model (another .npz archive, a text file),
        is truncated or damaged, has an unknown format version, or contains
        arrays whose names, shapes or dtypes do not match its architecture.
    """
    path = os.fsdecode(os.fspath(path))
    entries = _read_archive(path)
    _read_version(path, entries)
    architecture = _read_architecture(path, entries)
    return _build_model(path, architecture, entries)
