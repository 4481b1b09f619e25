"""Fuzz target: the file loaders of ``nnback.datasets``.

Each input writes one or more files and calls one of ``parse_idx``,
``read_idx``, ``load_npz``, ``load_mnist_idx``, ``load_dataset`` or
``load_samples``. The files start as valid IDX files (optionally gzipped),
.npz training archives (optionally compressed) or .npy arrays. Each file is
then kept, replaced by arbitrary bytes, mutated byte by byte, or rebuilt with
changed archive entries and .npy headers. Some files get headers that declare
huge sizes (IDX dimensions inside gzip, zip64 entry sizes). ``parse_idx``
also gets Python objects that are not bytes.

Pass criterion: the loader returns arrays of the documented dtypes and shapes
(float32 features of shape (n, n_features), int64 labels >= 0 of shape (n,)),
or raises ValueError for malformed data, FileNotFoundError for a missing file,
or TypeError for a ``parse_idx`` argument that is not bytes.
"""

import gzip
import io
import os
import struct
import tempfile
import warnings
import zipfile

import numpy as np
from hypothesis import strategies as st

from fuzz.common import OBJECTS, FuzzFailure, call_checked, draw_array, fuzz_target
from fuzz.mutate import (
    draw_npy_header,
    mutate_bytes,
    npy_bytes,
    npy_with_header,
    read_zip_entries,
    write_zip,
    write_zip64,
)
from nnback import datasets

ALLOWED_FILES = (ValueError, FileNotFoundError)
IDX_CODES = {np.dtype(dtype): code for code, dtype in
             ((0x08, "u1"), (0x09, "i1"), (0x0B, ">i2"), (0x0C, ">i4"), (0x0D, ">f4"), (0x0E, ">f8"))}
ENTRY_NAMES = ("x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy", "x_train", "extra.npy",
               "x_test.npy.npy", "dir/x_train.npy")


def idx_bytes(array):
    """Encode ``array`` (a dtype of IDX_CODES) as an IDX file."""
    array = np.asarray(array)
    big_endian = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    header = struct.pack(">BBBB", 0, 0, IDX_CODES[np.dtype(big_endian)], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(big_endian).tobytes()


def _draw_idx_array(data, kind):
    count = data.draw(st.integers(0, 4))
    if data.draw(st.integers(0, 4)) > 0:
        shape = (count, 2, 3) if kind == "images" else (count,)
        dtype = "u1"
    else:
        shape = tuple(data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=3)))
        dtype = data.draw(st.sampled_from(["u1", "i1", ">i2", ">i4", ">f4", ">f8"]))
    values = data.draw(st.binary(min_size=int(np.prod(shape)) * np.dtype(dtype).itemsize,
                                 max_size=int(np.prod(shape)) * np.dtype(dtype).itemsize))
    return np.frombuffer(values, dtype=dtype).reshape(shape)


def _draw_idx_file(data, kind):
    """Return the bytes of an IDX file, valid or mutated, and whether to gzip it."""
    raw = idx_bytes(_draw_idx_array(data, kind))
    change = data.draw(st.sampled_from(["none", "none", "bytes", "header", "arbitrary"]))
    if change == "bytes":
        raw = mutate_bytes(data, raw)
    elif change == "header":
        ndim = data.draw(st.integers(0, 5))
        dims = [data.draw(st.sampled_from([0, 1, 3, 2**16, 2**31, 2**32 - 1])) for _ in range(ndim)]
        code = data.draw(st.sampled_from([0x08, 0x0E, 0x07, 0xFF]))
        raw = struct.pack(">BBBB", 0, 0, code, ndim) + struct.pack(f">{ndim}I", *dims)
        raw += bytes(data.draw(st.sampled_from([0, 1, 6, 100])))
    elif change == "arbitrary":
        raw = data.draw(st.binary(max_size=64))
    return raw, data.draw(st.booleans())


def _write_idx(path, raw, compress):
    if compress:
        with gzip.open(path + ".gz", "wb") as file:
            file.write(raw)
        return path + ".gz"
    with open(path, "wb") as file:
        file.write(raw)
    return path


def _draw_npz_arrays(data):
    count = data.draw(st.integers(0, 4))
    arrays = {
        "x_train": draw_array(data, (count, 2, 3), "uint8", max_ndim=3),
        "y_train": draw_array(data, (count,), "uint8", max_ndim=2),
        "x_test": draw_array(data, (count, 6), "float32", max_ndim=3),
        "y_test": draw_array(data, (count,), "int64", max_ndim=2),
    }
    for key in list(arrays):
        if data.draw(st.integers(0, 9)) == 0:
            del arrays[key]
    if data.draw(st.integers(0, 4)) == 0:
        arrays["extra"] = draw_array(data, None, None, max_ndim=2)
    return arrays


def _npz_bytes(data):
    """Return the bytes of a .npz archive, valid or mutated."""
    arrays = {}
    for key, array in _draw_npz_arrays(data).items():
        plain = np.asarray(array)
        if plain.dtype.hasobject:
            continue
        arrays[key] = plain
    buffer = io.BytesIO()
    if data.draw(st.booleans()):
        np.savez_compressed(buffer, **arrays)
    else:
        np.savez(buffer, **arrays)
    raw = buffer.getvalue()

    change = data.draw(st.sampled_from(["none", "bytes", "entries", "entries", "large", "arbitrary"]))
    if change == "bytes":
        raw = mutate_bytes(data, raw)
    elif change == "entries":
        raw = _mutate_npz_entries(data, raw)
    elif change == "large":
        raw = _large_npz(data)
    elif change == "arbitrary":
        prefix = data.draw(st.sampled_from([b"", b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY"]))
        raw = prefix + data.draw(st.binary(max_size=256))
    return raw


def _mutate_npz_entries(data, raw):
    entries = read_zip_entries(raw)
    for _ in range(data.draw(st.integers(1, 3))):
        if not entries:
            break
        index = data.draw(st.integers(0, len(entries) - 1))
        action = data.draw(st.sampled_from(["drop", "repeat", "rename", "header", "bytes"]))
        name, content = entries[index]
        if action == "drop":
            del entries[index]
        elif action == "repeat":
            entries.append(entries[index])
        elif action == "rename":
            entries[index] = (data.draw(st.sampled_from(ENTRY_NAMES)), content)
        elif action == "header":
            header = draw_npy_header(data, (2, 6), data.draw(st.sampled_from(["|u1", "<f4", "<i8"])))
            version = data.draw(st.sampled_from([(1, 0), (2, 0), (3, 0)]))
            payload = data.draw(st.sampled_from([b"", bytes(12), bytes(48), bytes(1000)]))
            entries[index] = (name, npy_with_header(header, payload, version))
        else:
            entries[index] = (name, mutate_bytes(data, content))
    compressions = [data.draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED,
                                               zipfile.ZIP_BZIP2])) for _ in entries]
    with warnings.catch_warnings():
        # zipfile warns about repeated names, which this target writes on purpose.
        warnings.simplefilter("ignore", UserWarning)
        return write_zip(entries, compressions)


def _large_npz(data):
    """Return an archive whose x_train entry is compressed and declares a huge size."""
    rows = data.draw(st.sampled_from([2**10, 2**20, 2**31, 2**40]))
    header = npy_with_header(f"{{'descr': '|u1', 'fortran_order': False, 'shape': ({rows}, 784), }}", b"")
    content = header + bytes(data.draw(st.sampled_from([0, 784, 4096])))
    declared = len(header) + rows * 784
    if data.draw(st.booleans()):
        declared = data.draw(st.sampled_from([0, len(content), 2**32 + 5, 2**63]))
    small = {key: npy_bytes(value) for key, value in (
        ("y_train", np.zeros(rows % 7, np.uint8)), ("x_test", np.zeros((1, 784), np.uint8)),
        ("y_test", np.zeros(1, np.uint8)))}
    entries = [("x_train.npy", content, zipfile.ZIP_DEFLATED, declared)]
    entries += [(f"{key}.npy", value, zipfile.ZIP_STORED, len(value)) for key, value in small.items()]
    return write_zip64(entries)


def _npy_bytes(data):
    array = np.asarray(draw_array(data, (3, 4), "uint8", max_ndim=3))
    raw = b"" if array.dtype.hasobject else npy_bytes(array)
    change = data.draw(st.sampled_from(["none", "bytes", "header"]))
    if change == "bytes":
        raw = mutate_bytes(data, raw)
    elif change == "header":
        header = draw_npy_header(data, (3, 4), "|u1")
        raw = npy_with_header(header, bytes(data.draw(st.sampled_from([0, 12, 13, 1000]))))
    return raw


def _write_mnist_folder(data, folder, names):
    for key, name in datasets.MNIST_FILES.items():
        if key not in names and data.draw(st.integers(0, 5)) == 0:
            continue
        kind = "images" if key.startswith("x") else "labels"
        raw, compress = _draw_idx_file(data, kind)
        _write_idx(os.path.join(folder, name), raw, compress)


# ---------------------------------------------------------------------------
# Result checks
# ---------------------------------------------------------------------------


def _check_features(entry_point, x):
    if type(x) is not np.ndarray or x.dtype != np.float32 or x.ndim != 2 or not x.flags.c_contiguous:
        raise FuzzFailure(f"{entry_point}: features are not a C-contiguous float32 matrix",
                          f"{type(x).__name__} {getattr(x, 'dtype', None)} {getattr(x, 'shape', None)}")


def _check_labels(entry_point, y, n_samples):
    if type(y) is not np.ndarray or y.dtype != np.int64 or y.shape != (n_samples,):
        raise FuzzFailure(f"{entry_point}: labels are not int64 with one entry per sample",
                          f"{type(y).__name__} {getattr(y, 'dtype', None)} {getattr(y, 'shape', None)}")
    if y.size and y.min() < 0:
        raise FuzzFailure(f"{entry_point}: returned a negative label", repr(y))


def _check_dataset(entry_point, result):
    if not isinstance(result, datasets.Dataset):
        raise FuzzFailure(f"{entry_point}: returned something other than a Dataset", repr(result))
    for x, y in ((result.x_train, result.y_train), (result.x_test, result.y_test)):
        _check_features(entry_point, x)
        _check_labels(entry_point, y, x.shape[0])
    if result.x_train.shape[1] != result.x_test.shape[1]:
        raise FuzzFailure(f"{entry_point}: train and test features differ in width", "")


def _check_samples(entry_point, result):
    x, y = result
    _check_features(entry_point, x)
    if y is not None:
        _check_labels(entry_point, y, x.shape[0])


# ---------------------------------------------------------------------------
# Target
# ---------------------------------------------------------------------------


def _run_parse_idx(data, directory):
    if data.draw(st.integers(0, 4)) == 0:
        argument = data.draw(OBJECTS)
    else:
        raw, _ = _draw_idx_file(data, data.draw(st.sampled_from(["images", "labels"])))
        argument = data.draw(st.sampled_from([bytes, bytearray, memoryview]))(raw)
    outcome, result = call_checked("parse_idx", datasets.parse_idx, (ValueError, TypeError), argument)
    if outcome == "ok" and type(result) is not np.ndarray:
        raise FuzzFailure("parse_idx: returned something other than an ndarray", repr(result))


def _run_read_idx(data, directory):
    raw, compress = _draw_idx_file(data, "images")
    path = _write_idx(os.path.join(directory, "images-idx3-ubyte"), raw, compress)
    call_checked("read_idx", datasets.read_idx, ALLOWED_FILES, path)


def _run_npz(data, directory, entry_point):
    path = os.path.join(directory, "data.npz")
    with open(path, "wb") as file:
        file.write(_npz_bytes(data))
    function = getattr(datasets, entry_point)
    outcome, result = call_checked(entry_point, function, ALLOWED_FILES, path)
    if outcome == "ok":
        if entry_point == "load_samples":
            _check_samples(entry_point, result)
        else:
            _check_dataset(entry_point, result)


def _run_folder(data, directory, entry_point):
    folder = os.path.join(directory, "mnist")
    os.mkdir(folder)
    required = ("x_test",) if entry_point == "load_samples" else tuple(datasets.MNIST_FILES)
    _write_mnist_folder(data, folder, required)
    function = getattr(datasets, entry_point)
    outcome, result = call_checked(entry_point, function, ALLOWED_FILES, folder)
    if outcome == "ok":
        if entry_point == "load_samples":
            _check_samples(entry_point, result)
        else:
            _check_dataset(entry_point, result)


def _run_npy(data, directory):
    path = os.path.join(directory, data.draw(st.sampled_from(["samples.npy", "samples.txt"])))
    with open(path, "wb") as file:
        file.write(_npy_bytes(data))
    outcome, result = call_checked("load_samples", datasets.load_samples, ALLOWED_FILES, path)
    if outcome == "ok":
        _check_samples("load_samples", result)


@fuzz_target
def fuzz_datasets(data):
    with tempfile.TemporaryDirectory(prefix="nnback-fuzz-datasets-") as directory:
        case = data.draw(st.sampled_from([
            "parse_idx", "read_idx", "load_npz", "load_dataset_npz", "load_samples_npz",
            "load_mnist_idx", "load_dataset_folder", "load_samples_folder", "load_samples_npy",
        ]))
        with np.errstate(all="ignore"):
            if case == "parse_idx":
                _run_parse_idx(data, directory)
            elif case == "read_idx":
                _run_read_idx(data, directory)
            elif case == "load_npz":
                _run_npz(data, directory, "load_npz")
            elif case.endswith("_npz"):
                _run_npz(data, directory, case[: -len("_npz")])
            elif case == "load_mnist_idx":
                _run_folder(data, directory, "load_mnist_idx")
            elif case.endswith("_folder"):
                _run_folder(data, directory, case[: -len("_folder")])
            else:
                _run_npy(data, directory)
