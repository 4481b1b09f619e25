"""Tests for nnback.serialization: round trips, damaged and foreign files, atomic saves."""

import json
import os
import pathlib

import numpy as np
import pytest

from nnback import serialization
from nnback.layers import Linear, ReLU, Sequential, Sigmoid, SoftmaxCrossEntropy, Tanh, mlp
from nnback.serialization import ARCHITECTURE_KEY, FORMAT_VERSION, VERSION_KEY, load, save


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


def test_pickled_object_array_rejected(tmp_path, saved):
    _, path = saved
    entries = read_entries(path)
    entries["layers.0.bias"] = np.array([{"payload": 1}], dtype=object)
    tampered = tmp_path / "pickled.npz"
    write_entries(tampered, entries)

    with pytest.raises(ValueError, match="allow_pickle"):
        load(tampered)


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


def test_serialization_module_exports():
    assert serialization.load is load
    assert serialization.save is save
