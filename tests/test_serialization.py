"""Tests for nnback.serialization: round trips, damaged and foreign files, atomic saves."""

import io
import json
import os
import pathlib
import re
import stat
import struct
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

from nnback import _files, serialization
from nnback._files import atomic_write
from nnback.layers import Linear, ReLU, Sequential, Sigmoid, SoftmaxCrossEntropy, Tanh, mlp
from nnback.serialization import (
    ARCHITECTURE_KEY,
    FORMAT_VERSION,
    MAX_ARCHITECTURE_BYTES,
    VERSION_KEY,
    load,
    save,
)

# Peak of traced allocations allowed while rejecting a file whose architecture
# declares a 3000 x 3000 layer (36 MB in float32): the rejection must happen
# before any array of that size exists.
SMALL_PEAK_BYTES = 4 * 2**20


def trained_model(dtype=np.float32, activation="relu", seed=0):
    """Return a small model whose parameters (biases included) are all non-trivial."""
    model = mlp([4, 6, 5, 3], activation=activation, dtype=dtype, rng=seed)
    rng = np.random.default_rng(seed + 1)
    for param in model.parameters():
        param.data[...] = rng.standard_normal(param.shape)
    return model


def read_entries(path):
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def write_entries(path, entries):
    with open(path, "wb") as file:
        np.savez(file, **entries)


def architecture_of(entries):
    return json.loads(entries[ARCHITECTURE_KEY].tobytes().decode("utf-8"))


def with_architecture(entries, architecture):
    text = json.dumps(architecture).encode("utf-8")
    return entries | {ARCHITECTURE_KEY: np.frombuffer(text, dtype=np.uint8)}


@pytest.fixture
def saved(tmp_path):
    """Return (model, path) of a model saved to tmp_path / "model.npz"."""
    model = trained_model()
    path = tmp_path / "model.npz"
    save(model, path)
    return model, path


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_round_trip_is_bitwise(tmp_path, dtype, activation):
    model = trained_model(dtype, activation)
    path = tmp_path / "model.npz"

    model.save(path)
    loaded = load(path)

    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    assert loaded.dtype == dtype
    for original, restored in zip(model.parameters(), loaded.parameters()):
        assert restored.dtype == original.dtype
        assert restored.shape == original.shape
        assert restored.data.tobytes() == original.data.tobytes()


def test_round_trip_predictions_equal(saved):
    model, path = saved
    x = np.random.default_rng(3).standard_normal((7, 4)).astype(np.float32)

    loaded = Sequential.load(path)

    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_loaded_model_trains(saved):
    _, path = saved
    loaded = load(path)
    loss = SoftmaxCrossEntropy()
    x = np.ones((2, 4), dtype=np.float32)

    loss.forward(loaded.forward(x), np.array([0, 2]))
    loaded.backward(loss.backward())

    assert loaded.layers[0].weight.grad.any()


def test_round_trip_without_bias_and_mixed_activations(tmp_path):
    model = Sequential(
        Linear(3, 4, bias=False, dtype=np.float64, rng=0), Tanh(),
        Linear(4, 4, dtype=np.float64, rng=1), Sigmoid(),
        Linear(4, 2, bias=False, dtype=np.float64, rng=2), ReLU(),
    )
    path = tmp_path / "model.npz"

    save(model, path)
    loaded = load(path)

    assert [type(layer) for layer in loaded.layers] == [Linear, Tanh, Linear, Sigmoid, Linear, ReLU]
    assert loaded.layers[0].bias is None
    assert loaded.layers[2].bias is not None
    for original, restored in zip(model.parameters(), loaded.parameters()):
        assert restored.data.tobytes() == original.data.tobytes()


def test_round_trip_activation_only_model(tmp_path):
    path = tmp_path / "model.npz"

    save(Sequential(ReLU(), Tanh()), path)
    loaded = load(path)

    assert [type(layer) for layer in loaded.layers] == [ReLU, Tanh]
    assert loaded.dtype is None


def test_str_path_accepted(tmp_path, saved):
    model, _ = saved
    path = str(tmp_path / "as_string.npz")

    save(model, path)

    assert isinstance(load(path), Sequential)


def test_path_without_suffix_written_as_given(tmp_path, saved):
    model, _ = saved
    path = tmp_path / "model.weights"

    save(model, path)

    assert path.exists()
    assert not pathlib.Path(str(path) + ".npz").exists()
    assert len(load(path).parameters()) == len(model.parameters())


def test_file_layout(saved):
    _, path = saved

    entries = read_entries(path)
    architecture = architecture_of(entries)

    assert entries[VERSION_KEY].shape == ()
    assert int(entries[VERSION_KEY]) == FORMAT_VERSION
    assert entries[ARCHITECTURE_KEY].dtype == np.uint8
    assert architecture["dtype"] == "float32"
    assert architecture["layers"][0] == {"kind": "linear", "in_features": 4, "out_features": 6, "bias": True}
    assert architecture["layers"][1] == {"kind": "relu"}
    assert sorted(entries) == sorted(
        [VERSION_KEY, ARCHITECTURE_KEY, "layers.0.weight", "layers.0.bias", "layers.2.weight",
         "layers.2.bias", "layers.4.weight", "layers.4.bias"]
    )
    assert all(array.dtype != object for array in entries.values())


def test_overwrite_replaces_model(tmp_path):
    path = tmp_path / "model.npz"
    save(trained_model(seed=0), path)
    replacement = trained_model(seed=5)

    save(replacement, path)

    np.testing.assert_array_equal(load(path).layers[0].weight.data, replacement.layers[0].weight.data)


def test_saved_file_has_default_permissions(tmp_path, saved):
    model, _ = saved
    path = tmp_path / "permissions.npz"
    reference_path = tmp_path / "plain_file"
    reference_path.write_bytes(b"")

    save(model, path)

    assert (path.stat().st_mode & 0o777) == (reference_path.stat().st_mode & 0o777)


# ---------------------------------------------------------------------------
# Files that are not nnback models
# ---------------------------------------------------------------------------


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load(tmp_path / "missing.npz")


@pytest.mark.parametrize(
    "fraction", [0.0, 0.1, 0.5, 0.9, 0.99], ids=lambda value: f"keep_{value:.0%}"
)
def test_truncated_file_rejected(tmp_path, saved, fraction):
    _, path = saved
    data = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: int(len(data) * fraction)])

    with pytest.raises(ValueError, match="truncated.npz' is not"):
        load(truncated)


def test_truncated_by_one_byte_rejected(tmp_path, saved):
    _, path = saved
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:-1])

    with pytest.raises(ValueError, match="not a readable nnback model file"):
        load(truncated)


def test_corrupted_array_data_rejected(tmp_path, saved):
    # Flipping bytes inside the stored weights fails the zip CRC check.
    _, path = saved
    data = bytearray(path.read_bytes())
    entries = read_entries(path)
    weight_bytes = entries["layers.0.weight"].tobytes()
    position = bytes(data).index(weight_bytes) + len(weight_bytes) // 2
    data[position] ^= 0xFF
    corrupted = tmp_path / "corrupted.npz"
    corrupted.write_bytes(bytes(data))

    with pytest.raises(ValueError, match="not a readable nnback model file"):
        load(corrupted)


def test_foreign_npz_rejected(tmp_path):
    path = tmp_path / "foreign.npz"
    np.savez(path, weights=np.ones((3, 3)), labels=np.arange(3))

    with pytest.raises(ValueError, match="is not an nnback model file: it has no 'nnback_format_version'"):
        load(path)


def test_text_file_rejected(tmp_path):
    path = tmp_path / "model.npz"
    path.write_text("these are not the weights you are looking for\n")

    with pytest.raises(ValueError, match=r"is not an nnback model file: it is not a \.npz \(zip\) archive"):
        load(path)


def test_empty_file_rejected(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")

    with pytest.raises(ValueError, match="not a .npz"):
        load(path)


def test_npy_file_rejected(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.ones(3))

    with pytest.raises(ValueError, match="not a .npz"):
        load(path)


def test_empty_zip_rejected(tmp_path):
    path = tmp_path / "empty.npz"
    np.savez(path)

    with pytest.raises(ValueError, match="is not an nnback model file"):
        load(path)


UNPICKLED = []


def record_unpickling():
    UNPICKLED.append(True)
    return "payload"


class RecordsUnpickling:
    """An object whose unpickling appends to UNPICKLED."""

    def __reduce__(self):
        return record_unpickling, ()


@pytest.mark.parametrize("name", ["layers.0.bias", "payload"])
def test_pickled_object_array_never_unpickled(tmp_path, saved, name):
    _, path = saved
    entries = read_entries(path)
    entries[name] = np.array([RecordsUnpickling()], dtype=object)
    tampered = tmp_path / "pickled.npz"
    write_entries(tampered, entries)
    UNPICKLED.clear()

    with pytest.raises(ValueError, match=f"{name}"):
        load(tampered)

    assert UNPICKLED == []


def test_pickled_parameter_rejected_by_dtype(tmp_path, saved):
    _, path = saved
    entries = read_entries(path)
    entries["layers.0.bias"] = np.array([RecordsUnpickling()], dtype=object)
    tampered = tmp_path / "pickled.npz"
    write_entries(tampered, entries)

    with pytest.raises(ValueError, match="'layers.0.bias' has dtype object, expected float32"):
        load(tampered)


# ---------------------------------------------------------------------------
# Archives built entry by entry
# ---------------------------------------------------------------------------


def npy_bytes(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def npy_header(shape, descr="<f4"):
    """Return the bytes of a .npy header for ``shape`` and ``descr``, without data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()


def architecture_bytes(layers, dtype="float32"):
    text = json.dumps({"dtype": dtype, "layers": layers, "nnback_version": "0"})
    return npy_bytes(np.frombuffer(text.encode("utf-8"), dtype=np.uint8))


def linear_spec(in_features, out_features, bias=False):
    return {"kind": "linear", "in_features": in_features, "out_features": out_features, "bias": bias}


def write_members(path, members):
    """Write a zip archive from (member name, bytes) pairs, in order."""
    with warnings.catch_warnings():
        # zipfile warns about repeated names, which one test writes on purpose.
        warnings.simplefilter("ignore", UserWarning)
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in members:
                archive.writestr(name, data)


def base_members(layers):
    return [
        (f"{VERSION_KEY}.npy", npy_bytes(np.array(FORMAT_VERSION, dtype=np.int64))),
        (f"{ARCHITECTURE_KEY}.npy", architecture_bytes(layers)),
    ]


def set_declared_size(path, member, size):
    """Overwrite both sizes that the zip central directory records for ``member``."""
    data = bytearray(path.read_bytes())
    directory_start = data.index(b"PK\x01\x02")
    record = data.index(member.encode("utf-8"), directory_start) - 46
    assert data[record:record + 4] == b"PK\x01\x02"
    struct.pack_into("<II", data, record + 20, size, size)
    path.write_bytes(bytes(data))


def load_rejection(path):
    """Return (message of the ValueError that load(path) raises, peak of traced allocations)."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as error:
            load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return str(error.value), peak


def test_large_architecture_without_arrays_allocates_little(tmp_path):
    path = tmp_path / "small.npz"
    write_members(path, base_members([linear_spec(3000, 3000)]))

    message, peak = load_rejection(path)

    assert "'layers.0.weight' is missing" in message
    assert peak < SMALL_PEAK_BYTES


def test_array_header_without_data_allocates_little(tmp_path):
    path = tmp_path / "small.npz"
    members = base_members([linear_spec(3000, 3000)])
    members.append(("layers.0.weight.npy", npy_header((3000, 3000))))
    write_members(path, members)

    message, peak = load_rejection(path)

    assert re.search(r"'layers.0.weight' declares \d+ bytes, but its .npy header describes", message)
    assert peak < SMALL_PEAK_BYTES


def test_entry_larger_than_file_allocates_little(tmp_path):
    path = tmp_path / "small.npz"
    header = npy_header((3000, 3000))
    members = base_members([linear_spec(3000, 3000)])
    members.append(("layers.0.weight.npy", header))
    write_members(path, members)
    set_declared_size(path, "layers.0.weight.npy", len(header) + 3000 * 3000 * 4)

    message, peak = load_rejection(path)

    assert "does not fit in the file" in message
    assert peak < SMALL_PEAK_BYTES


def test_negative_entry_offset_rejected(saved):
    # zipfile adds the gap between the recorded and the actual position of the
    # central directory to every entry offset. An inflated record therefore
    # gives negative offsets, and seeking to one raises OSError (EINVAL).
    _, path = saved
    data = bytearray(path.read_bytes())
    end_record = data.rindex(b"PK\x05\x06")
    directory_offset = struct.unpack_from("<I", data, end_record + 16)[0]
    struct.pack_into("<I", data, end_record + 16, directory_offset + 10**6)
    path.write_bytes(bytes(data))

    with pytest.raises(ValueError, match="not a readable nnback model file"):
        load(path)


def test_unterminated_header_string_rejected(tmp_path):
    # NumPy's header parser raises tokenize.TokenError, not ValueError, for
    # an unterminated string.
    path = tmp_path / "model.npz"
    header = b"{'descr': '<f4" + b" " * 49 + b"\n"
    members = base_members([linear_spec(2, 3)])
    members.append(
        ("layers.0.weight.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header)
    )
    write_members(path, members)

    with pytest.raises(ValueError, match="not a readable nnback model file"):
        load(path)


def test_header_with_bytes_key_rejected(tmp_path):
    # NumPy sorts the header keys and raises TypeError for bytes next to str.
    path = tmp_path / "model.npz"
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), b'x': 1}"
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    members = base_members([linear_spec(2, 3)])
    members.append(
        ("layers.0.weight.npy",
         b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(24))
    )
    write_members(path, members)

    with pytest.raises(ValueError, match="not a readable nnback model file"):
        load(path)


def test_compressed_entry_beyond_memory_rejected(tmp_path, monkeypatch):
    # Deflate stores 36 MB of zeros in about 35 KB, so a small file can declare
    # parameters that exceed the memory of the machine. The limit is lowered
    # here instead of writing such a file.
    monkeypatch.setattr(serialization.datasets, "_memory_limit_bytes", lambda: 2**20)
    path = tmp_path / "bomb.npz"
    members = base_members([linear_spec(3000, 3000)])
    members.append(("layers.0.weight.npy", npy_header((3000, 3000)) + bytes(3000 * 3000 * 4)))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    assert path.stat().st_size < 2**20

    message, peak = load_rejection(path)

    assert "declare 34.3 MiB of data, more than the 1.0 MiB of memory" in message
    assert peak < SMALL_PEAK_BYTES


def test_load_draws_no_random_weights(saved, monkeypatch):
    model, path = saved

    def no_generator(*args, **kwargs):
        raise AssertionError("load must not draw initial weights")

    monkeypatch.setattr(np.random, "default_rng", no_generator)
    loaded = load(path)

    for original, restored in zip(model.parameters(), loaded.parameters()):
        np.testing.assert_array_equal(restored.data, original.data)


def test_loaded_parameters_are_native_and_writable(tmp_path, saved):
    def change(entries):
        for name in list(entries):
            if name.startswith("layers."):
                entries[name] = entries[name].astype(entries[name].dtype.newbyteorder(">"))

    model, _ = saved
    path = tampered_file(tmp_path, saved, change)

    loaded = load(path)

    for original, restored in zip(model.parameters(), loaded.parameters()):
        assert restored.dtype == np.float32
        assert restored.data.dtype.isnative
        assert restored.data.flags.writeable
        np.testing.assert_array_equal(restored.data, original.data)


@pytest.mark.parametrize(
    "extra_name",
    [
        pytest.param("payload.npy", id="npy_entry"),
        pytest.param("notes.txt", id="text_entry"),
        pytest.param("layers.0.weights.npy", id="misspelled_parameter"),
        pytest.param("layers.00.weight.npy", id="leading_zero"),
        pytest.param("nested/layers.0.weight.npy", id="directory"),
    ],
)
def test_unknown_entry_rejected_before_reading(tmp_path, extra_name):
    path = tmp_path / "extra.npz"
    members = base_members([linear_spec(2, 3)])
    members.append(("layers.0.weight.npy", npy_bytes(np.ones((2, 3), dtype=np.float32))))
    members.append((extra_name, b"not read"))
    write_members(path, members)

    with pytest.raises(ValueError, match="entries that an nnback model file never has") as error:
        load(path)

    assert extra_name in str(error.value)


def test_repeated_entry_rejected(tmp_path):
    path = tmp_path / "repeated.npz"
    members = base_members([linear_spec(2, 3)])
    members.append(("layers.0.weight.npy", npy_bytes(np.ones((2, 3), dtype=np.float32))))
    members.append(("layers.0.weight.npy", npy_bytes(np.zeros((2, 3), dtype=np.float32))))
    write_members(path, members)

    with pytest.raises(ValueError, match="contains the entry 'layers.0.weight.npy' more than once"):
        load(path)


def test_fortran_order_array_loads(tmp_path):
    weight = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    path = tmp_path / "fortran.npz"
    members = base_members([linear_spec(2, 3)])
    members.append(("layers.0.weight.npy", npy_bytes(weight)))
    write_members(path, members)

    loaded = load(path)

    np.testing.assert_array_equal(loaded.layers[0].weight.data, weight)
    assert loaded.layers[0].weight.data.flags.c_contiguous


def test_compressed_archive_loads(tmp_path, saved):
    model, _ = saved
    path = tmp_path / "compressed.npz"
    np.savez_compressed(path, **read_entries(saved[1]))

    loaded = load(path)

    for original, restored in zip(model.parameters(), loaded.parameters()):
        np.testing.assert_array_equal(restored.data, original.data)


# ---------------------------------------------------------------------------
# nnback files that do not match their architecture
# ---------------------------------------------------------------------------


def tampered_file(tmp_path, saved, change):
    """Write a copy of the saved model with ``change(entries)`` applied and return its path."""
    _, path = saved
    entries = read_entries(path)
    change(entries)
    target = tmp_path / "tampered.npz"
    write_entries(target, entries)
    return target


def set_architecture(entries, edit):
    architecture = architecture_of(entries)
    edit(architecture)
    entries.update(with_architecture(entries, architecture))


MISMATCH_CASES = [
    pytest.param(
        lambda e: e.update({"layers.0.weight": np.ones((6, 4), dtype=np.float32)}),
        r"'layers.0.weight' has shape \(6, 4\), but the architecture needs \(4, 6\)",
        id="transposed_weight",
    ),
    pytest.param(
        lambda e: e.update({"layers.2.bias": np.ones(4, dtype=np.float32)}),
        r"'layers.2.bias' has shape \(4,\)",
        id="short_bias",
    ),
    pytest.param(
        lambda e: e.update({"layers.0.weight": e["layers.0.weight"].astype(np.float64)}),
        "has dtype float64, expected float32",
        id="wrong_dtype",
    ),
    pytest.param(
        lambda e: e.pop("layers.4.bias"),
        "'layers.4.bias' is missing",
        id="missing_bias",
    ),
    pytest.param(
        lambda e: e.update({"layers.1.weight": np.ones((6, 6), dtype=np.float32)}),
        r"\['layers.1.weight'\] do not belong to the architecture",
        id="extra_array",
    ),
    pytest.param(
        lambda e: e.update({VERSION_KEY: np.array(FORMAT_VERSION + 1)}),
        f"has format version {FORMAT_VERSION + 1}, but this nnback .* reads only version {FORMAT_VERSION}",
        id="unknown_version",
    ),
    pytest.param(
        lambda e: e.update({VERSION_KEY: np.array([1, 2])}),
        "must be an integer scalar",
        id="version_not_scalar",
    ),
    pytest.param(
        lambda e: e.update({ARCHITECTURE_KEY: np.frombuffer(b"{not json", dtype=np.uint8)}),
        "is not valid UTF-8 JSON",
        id="bad_json",
    ),
    pytest.param(
        lambda e: e.update({ARCHITECTURE_KEY: np.array(["text"])}),
        "must be a 1-D uint8 array",
        id="architecture_not_bytes",
    ),
    pytest.param(
        lambda e: set_architecture(e, lambda a: a["layers"][1].update(kind="gelu")),
        r"layers\[1\] has kind 'gelu'",
        id="unknown_kind",
    ),
    pytest.param(
        lambda e: set_architecture(e, lambda a: a.update(dtype="float16")),
        "dtype 'float16'",
        id="unknown_dtype",
    ),
    pytest.param(
        lambda e: set_architecture(e, lambda a: a["layers"][0].update(in_features=-4)),
        r"layers\[0\].in_features must be a non-negative integer",
        id="negative_size",
    ),
    pytest.param(
        lambda e: set_architecture(e, lambda a: a["layers"][0].update(bias="yes")),
        r"layers\[0\].bias must be true or false",
        id="bias_not_bool",
    ),
    pytest.param(
        lambda e: set_architecture(e, lambda a: a["layers"][0].update(units=3)),
        r"layers\[0\] \(linear\) has the keys",
        id="unknown_key",
    ),
    pytest.param(
        lambda e: set_architecture(e, lambda a: a.update(layers=[])),
        "lists no layers",
        id="no_layers",
    ),
    pytest.param(
        lambda e: set_architecture(e, lambda a: a.pop("layers")),
        "JSON object with a 'layers' list",
        id="no_layers_key",
    ),
]


@pytest.mark.parametrize("change, message", MISMATCH_CASES)
def test_mismatched_file_rejected(tmp_path, saved, change, message):
    path = tampered_file(tmp_path, saved, change)

    with pytest.raises(ValueError, match=message):
        load(path)


def set_raw_architecture(entries, text):
    entries[ARCHITECTURE_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def layer_edit(index, **fields):
    return lambda e: set_architecture(e, lambda a: a["layers"][index].update(fields))


DEEP_NESTING = 100_000

# Architecture fields of the wrong JSON type or out of range. Each must raise a
# ValueError that names the file and the field, never TypeError or RecursionError.
ARCHITECTURE_TYPE_CASES = [
    pytest.param(lambda e: set_architecture(e, lambda a: a.update(dtype=["float32"])),
                 r"has dtype \['float32'\], expected 'float32', 'float64' or null", id="dtype_list"),
    pytest.param(lambda e: set_architecture(e, lambda a: a.update(dtype={"name": "float32"})),
                 r"has dtype \{'name': 'float32'\}", id="dtype_object"),
    pytest.param(lambda e: set_architecture(e, lambda a: a.update(dtype=32)),
                 "has dtype 32", id="dtype_number"),
    pytest.param(layer_edit(1, kind=["relu"]), r"layers\[1\] has kind \['relu'\]", id="kind_list"),
    pytest.param(layer_edit(0, kind={"linear": True}), r"layers\[0\] has kind \{'linear': True\}", id="kind_object"),
    pytest.param(layer_edit(1, kind=None), r"layers\[1\] has kind None", id="kind_null"),
    pytest.param(lambda e: set_architecture(e, lambda a: a["layers"].__setitem__(1, "relu")),
                 r"layers\[1\] must be a JSON object, got 'relu'", id="layer_string"),
    pytest.param(lambda e: set_architecture(e, lambda a: a["layers"].__setitem__(1, ["relu"])),
                 r"layers\[1\] must be a JSON object", id="layer_list"),
    pytest.param(layer_edit(0, in_features="4"), r"layers\[0\].in_features must be a non-negative integer",
                 id="size_string"),
    pytest.param(layer_edit(0, in_features=True), r"layers\[0\].in_features must be .* got True", id="size_bool"),
    pytest.param(layer_edit(0, in_features=4.0), r"layers\[0\].in_features must be .* got 4.0", id="size_float"),
    pytest.param(layer_edit(0, out_features=None), r"layers\[0\].out_features must be .* got None", id="size_null"),
    pytest.param(layer_edit(2, out_features=-5), r"layers\[2\].out_features must be .* got -5", id="size_negative"),
    pytest.param(layer_edit(0, in_features=2**31), r"layers\[0\].in_features must be a non-negative integer "
                 r"of at most 2147483647, got 2147483648", id="size_above_blas_limit"),
    pytest.param(layer_edit(0, in_features=10**30), r"layers\[0\].in_features must be", id="size_huge"),
    pytest.param(layer_edit(0, in_features=[4]), r"layers\[0\].in_features must be .* got \[4\]", id="size_list"),
    pytest.param(layer_edit(0, bias=None), r"layers\[0\].bias must be true or false, got None", id="bias_null"),
    pytest.param(layer_edit(0, bias=1), r"layers\[0\].bias must be true or false, got 1", id="bias_number"),
    pytest.param(lambda e: set_architecture(e, lambda a: a.update(layers={"0": {"kind": "relu"}})),
                 "JSON object with a 'layers' list", id="layers_object"),
    pytest.param(lambda e: set_raw_architecture(e, '[{"kind": "relu"}]'),
                 "JSON object with a 'layers' list", id="architecture_list"),
    pytest.param(lambda e: set_raw_architecture(e, "[" * DEEP_NESTING + "]" * DEEP_NESTING),
                 "nests JSON arrays or objects too deeply", id="deep_nesting"),
    pytest.param(lambda e: set_raw_architecture(
        e, '{"dtype": "float32", "layers": [], "nnback_version": ' + "[" * DEEP_NESTING + "]" * DEEP_NESTING + "}"),
        "nests JSON arrays or objects too deeply", id="deep_nesting_in_field"),
    pytest.param(lambda e: set_raw_architecture(
        e, '{"dtype": "float32", "layers": [{"kind": "linear", "in_features": 1' + "0" * 5000 + "}]}"),
        "is not valid UTF-8 JSON", id="integer_too_long"),
    pytest.param(lambda e: set_raw_architecture(e, " " * MAX_ARCHITECTURE_BYTES + '{"layers": []}'),
                 f"bytes, more than the limit of {MAX_ARCHITECTURE_BYTES}", id="too_large"),
]


@pytest.mark.parametrize("change, message", ARCHITECTURE_TYPE_CASES)
def test_architecture_of_wrong_type_rejected(tmp_path, saved, change, message):
    path = tampered_file(tmp_path, saved, change)

    with pytest.raises(ValueError, match=message) as error:
        load(path)

    assert str(error.value).startswith(f"{str(path)!r}")


def test_inconsistent_layer_sizes_rejected(tmp_path, saved):
    def change(entries):
        # Both arrays match the edited architecture, but the layers no longer chain.
        set_architecture(entries, lambda a: a["layers"][2].update(in_features=7))
        entries["layers.2.weight"] = np.zeros((7, 5), dtype=np.float32)

    path = tampered_file(tmp_path, saved, change)

    with pytest.raises(ValueError, match="the architecture is not a valid model"):
        load(path)


# ---------------------------------------------------------------------------
# Atomic save
# ---------------------------------------------------------------------------


class SimulatedCrash(Exception):
    pass


def partial_savez(file, **entries):
    file.write(b"PK\x03\x04 half of an archive")
    raise SimulatedCrash("disk full")


def failing_replace(source, destination):
    raise SimulatedCrash("power loss before the rename")


@pytest.mark.parametrize(
    "target, replacement",
    [
        pytest.param(np, partial_savez, id="savez_fails"),
        pytest.param(os, failing_replace, id="replace_fails"),
    ],
)
def test_failed_save_keeps_old_file(tmp_path, saved, monkeypatch, target, replacement):
    model, path = saved
    old_bytes = path.read_bytes()
    monkeypatch.setattr(target, "savez" if target is np else "replace", replacement)

    with pytest.raises(SimulatedCrash):
        save(trained_model(seed=9), path)

    assert path.read_bytes() == old_bytes
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(np, "savez", partial_savez)

    with pytest.raises(SimulatedCrash):
        save(trained_model(), tmp_path / "model.npz")

    assert os.listdir(tmp_path) == []


def default_file_mode(directory):
    reference_path = directory / "reference_file"
    reference_path.write_bytes(b"")
    mode = reference_path.stat().st_mode & 0o777
    reference_path.unlink()
    return mode


def test_save_keeps_mode_of_existing_file(tmp_path, saved):
    model, path = saved
    mode = 0o600 if default_file_mode(tmp_path) != 0o600 else 0o640
    path.chmod(mode)

    save(trained_model(seed=4), path)

    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_save_through_symlink_replaces_target(tmp_path, saved):
    _, target = saved
    link = tmp_path / "link.npz"
    link.symlink_to(target.name)
    replacement = trained_model(seed=6)

    save(replacement, link)

    assert link.is_symlink()
    assert os.readlink(link) == target.name
    np.testing.assert_array_equal(load(target).layers[0].weight.data, replacement.layers[0].weight.data)
    assert sorted(os.listdir(tmp_path)) == ["link.npz", "model.npz"]


def test_save_through_dangling_symlink_creates_target(tmp_path):
    (tmp_path / "models").mkdir()
    link = tmp_path / "latest.npz"
    link.symlink_to(pathlib.Path("models") / "model.npz")

    save(trained_model(), link)

    assert link.is_symlink()
    assert (tmp_path / "models" / "model.npz").is_file()
    assert len(load(link).parameters()) == 6


def test_save_with_long_file_name(tmp_path):
    path = tmp_path / ("m" * 246 + ".npz")

    save(trained_model(), path)

    assert len(path.name) == 250
    assert os.listdir(tmp_path) == [path.name]


def test_save_rejects_empty_path():
    with pytest.raises(ValueError, match="path is empty"):
        save(trained_model(), "")


def test_save_to_directory_raises(tmp_path):
    with pytest.raises(IsADirectoryError, match="it is a directory"):
        save(trained_model(), tmp_path)

    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_save_to_fifo_rejected(tmp_path):
    path = tmp_path / "pipe"
    os.mkfifo(path)

    with pytest.raises(ValueError, match="is not a regular file"):
        save(trained_model(), path)

    assert stat.S_ISFIFO(path.stat().st_mode)
    assert os.listdir(tmp_path) == ["pipe"]


def test_save_into_missing_directory_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save(trained_model(), tmp_path / "no_such_dir" / "model.npz")


def test_save_rejects_non_sequential(tmp_path):
    with pytest.raises(TypeError, match="model must be a Sequential, got Linear"):
        save(Linear(2, 2), tmp_path / "model.npz")


def test_save_rejects_unknown_layer(tmp_path):
    class Scale:
        def forward(self, x):
            return x

        def backward(self, dy):
            return dy

        def parameters(self):
            return []

        def predict(self, x):
            return x

    model = Sequential(Linear(2, 2), Scale())

    with pytest.raises(TypeError, match=r"cannot save layers\[1\] of type Scale"):
        save(model, tmp_path / "model.npz")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------
# atomic_write
# ---------------------------------------------------------------------------


def test_atomic_write_text_mode(tmp_path):
    path = tmp_path / "labels.csv"

    result = atomic_write(path, lambda file: file.write("1,caf\u00e9\n"), binary=False)

    assert result == 7
    assert path.read_bytes() == "1,caf\u00e9\n".encode("utf-8")


def test_atomic_write_uses_short_temporary_name(tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace

    def recording_replace(source, destination):
        renames.append((source, destination))
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", recording_replace)
    path = tmp_path / "output.bin"

    atomic_write(path, lambda file: file.write(b"data"))

    [(source, destination)] = renames
    assert os.path.dirname(source) == str(tmp_path)
    assert re.fullmatch(r"\.nnback-[0-9a-f]{16}\.tmp", os.path.basename(source))
    assert destination == str(path)


def test_atomic_write_failure_keeps_old_text(tmp_path):
    path = tmp_path / "output.txt"
    path.write_text("old\n")

    def fail_halfway(file):
        file.write("new")
        raise SimulatedCrash("disk full")

    with pytest.raises(SimulatedCrash):
        atomic_write(path, fail_halfway, binary=False)

    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["output.txt"]


def test_atomic_write_bad_encoding_leaves_nothing(tmp_path):
    with pytest.raises(LookupError):
        atomic_write(tmp_path / "output.txt", lambda file: None, binary=False, encoding="no-such-codec")

    assert os.listdir(tmp_path) == []


def test_files_module_exports():
    assert _files.__all__ == ["atomic_write", "read_regular_file_start"]


def test_serialization_module_exports():
    assert serialization.load is load
    assert serialization.save is save
