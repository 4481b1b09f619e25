"""Fuzz target: ``nnback.load`` on arbitrary bytes and on damaged model files.

Each input starts from a model file written by ``Sequential.save``, with a
drawn architecture and dtype. The input then keeps the file, replaces it with
arbitrary bytes, or mutates its bytes (flips, overwrites, truncation,
insertion, deletion, 32-bit integers). Or it rebuilds the zip archive with
changed entries: entries dropped, repeated or renamed, the architecture JSON
mutated, .npy headers with other shapes, dtypes and versions, data cut short
or extended, and entries compressed. A last kind of input has a compressed
weight entry whose zip64 headers declare a huge size.

Pass criterion: ``load`` returns a Sequential or raises ValueError, which it
documents for every damaged or foreign file. An unchanged file must load with
the saved predictions, and a loaded model must predict a small batch.
"""

import io
import json
import os
import tempfile
import warnings
import zipfile

import numpy as np
from hypothesis import strategies as st

import nnback
from fuzz.common import FuzzFailure, call_checked, draw_array, fuzz_target
from fuzz.mutate import (
    draw_npy_header,
    json_bytes,
    mutate_bytes,
    mutate_json,
    npy_bytes,
    npy_with_header,
    read_zip_entries,
    write_zip,
    write_zip64,
)
from nnback import Linear, ReLU, Sequential, Sigmoid, Tanh

ALLOWED = (ValueError,)

ENTRY_NAMES = (
    "nnback_format_version.npy", "nnback_architecture.npy", "layers.0.weight.npy",
    "layers.0.bias.npy", "layers.2.weight.npy", "layers.01.weight.npy", "layers.0.weight",
    "layers.-1.bias.npy", "x_train.npy", "../escape.npy", "dir/", "layers.0.weight.npy\x00",
)
COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED,
                zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


def _draw_model(data):
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    sizes = data.draw(st.lists(st.integers(0, 4), min_size=2, max_size=4))
    layers = []
    for index in range(len(sizes) - 1):
        layers.append(Linear(sizes[index], sizes[index + 1], bias=data.draw(st.booleans()),
                             dtype=dtype, rng=index))
        if data.draw(st.booleans()):
            layers.append(data.draw(st.sampled_from([ReLU, Sigmoid, Tanh]))())
    if data.draw(st.integers(0, 9)) == 0:
        layers = [data.draw(st.sampled_from([ReLU, Sigmoid, Tanh]))()]
    return Sequential(*layers)


def _mutate_entries(data, raw):
    entries = read_zip_entries(raw)
    for _ in range(data.draw(st.integers(1, 3))):
        action = data.draw(st.sampled_from(
            ["drop", "repeat", "rename", "architecture", "version", "array", "header", "add"]))
        index = data.draw(st.integers(0, len(entries) - 1)) if entries else None
        if action == "drop" and entries:
            del entries[index]
        elif action == "repeat" and entries:
            entries.append(entries[index])
        elif action == "rename" and entries:
            entries[index] = (data.draw(st.sampled_from(ENTRY_NAMES)), entries[index][1])
        elif action == "architecture":
            entries = _replace_architecture(data, entries)
        elif action == "version":
            value = draw_array(data, (), "int64", max_ndim=1)
            entries = _replace(entries, "nnback_format_version.npy", _npy_or_empty(value))
        elif action == "array" and entries:
            name, content = entries[index]
            entries[index] = (name, _npy_or_empty(draw_array(data, None, "float32", max_ndim=3)))
        elif action == "header" and entries:
            name, content = entries[index]
            header = draw_npy_header(data, (2, 3), "<f4")
            version = data.draw(st.sampled_from([(1, 0), (2, 0), (3, 0), (9, 9)]))
            payload = data.draw(st.sampled_from([b"", bytes(24), bytes(7), bytes(100)]))
            entries[index] = (name, npy_with_header(header, payload, version))
        elif action == "add":
            entries.append((data.draw(st.sampled_from(ENTRY_NAMES)), data.draw(st.binary(max_size=64))))
    compressions = [data.draw(st.sampled_from(COMPRESSIONS)) for _ in entries]
    with warnings.catch_warnings():
        # zipfile warns about repeated names, which this target writes on purpose.
        warnings.simplefilter("ignore", UserWarning)
        return write_zip(entries, compressions)


def _npy_or_empty(array):
    try:
        return npy_bytes(np.asarray(array))
    except ValueError:
        # Object arrays cannot be written without pickle.
        return b""


def _replace(entries, name, content):
    replaced = [(entry, content if entry == name else old) for entry, old in entries]
    if all(entry != name for entry, _ in entries):
        replaced.append((name, content))
    return replaced


def _replace_architecture(data, entries):
    name = "nnback_architecture.npy"
    for entry, content in entries:
        if entry != name:
            continue
        try:
            text = np.load(io.BytesIO(content), allow_pickle=False).tobytes()
            architecture = json.loads(text.decode("utf-8"))
        except Exception:
            return entries
        changed = json_bytes(mutate_json(data, architecture))
        return _replace(entries, name, npy_bytes(np.frombuffer(changed, dtype=np.uint8)))
    return entries


def _large_declaration(data):
    """Return a model file whose weight entry is compressed and declares a huge size."""
    rows = data.draw(st.sampled_from([2**10, 2**16, 2**20, 2**31 - 1]))
    columns = data.draw(st.sampled_from([1, 2**12, 2**16, 2**31 - 1]))
    dtype = data.draw(st.sampled_from(["float32", "float64"]))
    architecture = {
        "dtype": dtype,
        "layers": [{"kind": "linear", "in_features": rows, "out_features": columns, "bias": False}],
        "nnback_version": "0",
    }
    architecture_npy = npy_bytes(np.frombuffer(json_bytes(architecture), dtype=np.uint8))
    version_npy = npy_bytes(np.array(1, dtype=np.int64))
    descr = "<f4" if dtype == "float32" else "<f8"
    header = npy_with_header(
        f"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {columns}), }}", b""
    )
    content = header + bytes(data.draw(st.sampled_from([0, 64, 4096])))
    itemsize = 4 if dtype == "float32" else 8
    declared = len(header) + rows * columns * itemsize
    if data.draw(st.booleans()):
        declared = data.draw(st.sampled_from([0, len(content), 2**32 + 5, 2**63 - 1]))
    return write_zip64([
        ("nnback_format_version.npy", version_npy, zipfile.ZIP_STORED, len(version_npy)),
        ("nnback_architecture.npy", architecture_npy, zipfile.ZIP_STORED, len(architecture_npy)),
        ("layers.0.weight.npy", content, zipfile.ZIP_DEFLATED, declared),
    ])


@fuzz_target
def fuzz_load(data):
    with tempfile.TemporaryDirectory(prefix="nnback-fuzz-load-") as directory:
        path = os.path.join(directory, "model.npz")
        model = _draw_model(data)
        model.save(path)
        with open(path, "rb") as file:
            raw = file.read()

        kind = data.draw(st.sampled_from(["valid", "arbitrary", "bytes", "bytes", "entries",
                                          "entries", "entries", "large"]))
        if kind == "arbitrary":
            prefix = data.draw(st.sampled_from([b"", b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY"]))
            raw = prefix + data.draw(st.binary(max_size=512))
        elif kind == "bytes":
            raw = mutate_bytes(data, raw)
        elif kind == "entries":
            raw = _mutate_entries(data, raw)
        elif kind == "large":
            raw = _large_declaration(data)
        with open(path, "wb") as file:
            file.write(raw)

        with np.errstate(all="ignore"):
            outcome, loaded = call_checked("load", nnback.load, ALLOWED, path)
        if kind == "valid" and outcome != "ok":
            raise FuzzFailure("load: rejected an unchanged file written by save", repr(loaded))
        if outcome != "ok":
            return
        if not isinstance(loaded, Sequential):
            raise FuzzFailure("load: returned something other than a Sequential", repr(loaded))

        sizes = loaded.feature_sizes
        x = np.linspace(-1.0, 1.0, 2 * (sizes[0] if sizes else 3)).reshape(2, -1)
        with np.errstate(all="ignore"):
            outcome, predicted = call_checked("predict of a loaded model", loaded.predict,
                                              (), x)
            if kind == "valid" and not np.array_equal(predicted, model.predict(x), equal_nan=True):
                raise FuzzFailure("load: an unchanged file loads with other predictions", "")
