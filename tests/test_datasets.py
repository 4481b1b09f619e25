"""Tests of nnback.datasets: digits, .npz archives and MNIST IDX files."""

import gzip
import os
import re
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from nnback import datasets

IDX_TYPE_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(array):
    """Encode ``array`` in the IDX format: magic number, big-endian dims, big-endian data."""
    array = np.asarray(array)
    header = struct.pack(">BBBB", 0, 0, IDX_TYPE_CODES[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array, *, compress=False):
    data = idx_bytes(array)
    if compress:
        with gzip.open(path, "wb") as file:
            file.write(data)
    else:
        with open(path, "wb") as file:
            file.write(data)
    return path


def write_mnist_folder(folder, *, n_train=12, n_test=5, rows=4, cols=3, compress=(), seed=0):
    """Write the four MNIST files with random uint8 content and return the raw arrays.

    ``compress`` names the keys (x_train, y_train, x_test, y_test) whose files are
    gzipped.
    """
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, size=(n_train, rows, cols), dtype=np.uint8),
        "y_train": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, size=(n_test, rows, cols), dtype=np.uint8),
        "y_test": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    os.makedirs(folder, exist_ok=True)
    for key, name in datasets.MNIST_FILES.items():
        gz = key in compress
        path = os.path.join(folder, name + (".gz" if gz else ""))
        write_idx(path, arrays[key], compress=gz)
    return arrays


def npz_arrays(n_train=8, n_test=4, n_features=5, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.standard_normal((n_train, n_features)),
        "y_train": rng.integers(0, 3, size=n_train),
        "x_test": rng.standard_normal((n_test, n_features)),
        "y_test": rng.integers(0, 3, size=n_test),
    }


# ---------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------


def test_digits_shapes_and_range():
    pytest.importorskip("sklearn")
    data = datasets.load_digits()

    assert data.x_train.shape == (1347, 64)
    assert data.x_test.shape == (450, 64)
    assert data.y_train.shape == (1347,)
    assert data.y_test.shape == (450,)
    assert data.x_train.dtype == np.float32
    assert data.y_train.dtype == np.int64
    assert data.x_train.flags.c_contiguous
    assert data.x_train.min() == 0.0
    assert data.x_train.max() == 1.0
    assert data.n_classes == 10
    assert data.n_features == 64


def test_digits_split_is_fixed():
    pytest.importorskip("sklearn")
    first = datasets.load_digits()
    second = datasets.load_digits()

    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_digits_split_is_stratified():
    pytest.importorskip("sklearn")
    data = datasets.load_digits()
    counts = np.bincount(data.y_test, minlength=10)

    assert counts.min() >= 43
    assert counts.max() <= 46


def test_digits_values_are_pixels_over_16():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    raw = sklearn_datasets.load_digits().data
    data = datasets.load_digits()
    # Every scaled row must be some raw row divided by 16.
    all_rows = np.concatenate([data.x_train, data.x_test])

    np.testing.assert_array_equal(
        np.sort((all_rows * 16).round().astype(int), axis=0),
        np.sort(raw.astype(int), axis=0),
    )


# ---------------------------------------------------------------------------
# .npz
# ---------------------------------------------------------------------------


def test_npz_float_features_unchanged(tmp_path):
    arrays = npz_arrays()
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)

    data = datasets.load_npz(path)

    np.testing.assert_array_equal(data.x_train, arrays["x_train"].astype(np.float32))
    np.testing.assert_array_equal(data.y_train, arrays["y_train"])
    np.testing.assert_array_equal(data.x_test, arrays["x_test"].astype(np.float32))
    np.testing.assert_array_equal(data.y_test, arrays["y_test"])
    assert data.x_train.dtype == np.float32
    assert data.y_test.dtype == np.int64


def test_npz_uint8_images_flattened_and_scaled(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(6, 4, 3), dtype=np.uint8)
    images[0, 0, 0] = 255
    path = tmp_path / "images.npz"
    np.savez_compressed(
        path,
        x_train=images,
        y_train=np.arange(6, dtype=np.uint8),
        x_test=images[:2],
        y_test=np.array([1, 2], dtype=np.int16),
    )

    data = datasets.load_npz(path)

    assert data.x_train.shape == (6, 12)
    assert data.x_train[0, 0] == 1.0
    np.testing.assert_allclose(data.x_train, images.reshape(6, 12) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_test, [1, 2])


def test_npz_extra_arrays_ignored(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, notes=np.arange(3), **npz_arrays())

    data = datasets.load_npz(path)

    assert data.x_train.shape == (8, 5)


def _save_npz_with(tmp_path, **changes):
    arrays = npz_arrays()
    arrays.update(changes)
    arrays = {key: value for key, value in arrays.items() if value is not None}
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


NPZ_ERRORS = [
    ("missing_y_test", {"y_test": None}, "missing array(s) y_test"),
    ("missing_two", {"x_train": None, "y_train": None}, "missing array(s) x_train, y_train"),
    ("x_1d", {"x_train": np.zeros(8)}, "x_train has shape (8,): expected at least 2"),
    ("y_2d", {"y_train": np.zeros((8, 1), dtype=int)}, "y_train has shape (8, 1)"),
    ("length_mismatch", {"y_train": np.zeros(7, dtype=int)}, "x_train has 8 samples but y_train has 7"),
    ("feature_mismatch", {"x_test": np.zeros((4, 6))}, "x_test has 6"),
    ("float_labels", {"y_test": np.zeros(4)}, "y_test has dtype float64: expected integer"),
    ("negative_label", {"y_train": np.full(8, -1)}, "negative label -1"),
    ("string_features", {"x_test": np.array([["a"] * 5] * 4)}, "x_test has dtype <U1"),
    ("empty_train", {"x_train": np.zeros((0, 5)), "y_train": np.zeros(0, dtype=int)}, "no samples"),
]


@pytest.mark.parametrize(
    "changes, message", [case[1:] for case in NPZ_ERRORS], ids=[case[0] for case in NPZ_ERRORS]
)
def test_npz_invalid_content(tmp_path, changes, message):
    path = _save_npz_with(tmp_path, **changes)

    with pytest.raises(ValueError) as info:
        datasets.load_npz(path)

    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_npz_object_array_rejected(tmp_path):
    path = _save_npz_with(tmp_path, y_test=np.array([1, "a", None, 2.0], dtype=object))

    with pytest.raises(ValueError) as info:
        datasets.load_npz(path)

    assert str(path) in str(info.value)
    assert "y_test has dtype object: expected integer class labels" in str(info.value)


def test_npz_not_an_archive(tmp_path):
    path = tmp_path / "data.npz"
    path.write_bytes(b"this is not a zip file")

    with pytest.raises(ValueError) as info:
        datasets.load_npz(path)

    assert str(path) in str(info.value)
    assert "not a valid .npz file" in str(info.value)
    assert "b'this is '" in str(info.value)


def test_npz_text_file_named_npz(tmp_path):
    path = tmp_path / "x.npz"
    path.write_text("0.5 0.25\n1.0 0.0\n")

    for load in (datasets.load_npz, datasets.load_samples):
        with pytest.raises(ValueError) as info:
            load(path)
        assert str(path) in str(info.value)
        assert "not a valid .npz file" in str(info.value)
        assert "pickled" not in str(info.value)


def test_npz_single_array_rejected(tmp_path):
    path = tmp_path / "data.npz"
    with open(path, "wb") as file:
        np.save(file, np.zeros(3))

    with pytest.raises(ValueError, match="single .npy array"):
        datasets.load_npz(path)


def test_npz_truncated_archive(tmp_path):
    path = _save_npz_with(tmp_path)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])

    with pytest.raises(ValueError, match="not a valid .npz file: the zip archive is truncated"):
        datasets.load_npz(path)


def test_npz_negative_member_offset(tmp_path):
    # zipfile adds the gap between the recorded and the actual position of the
    # central directory to every member offset. An inflated record therefore
    # gives negative offsets, and seeking to one raises OSError (EINVAL).
    path = _save_npz_with(tmp_path)
    content = bytearray(path.read_bytes())
    end_record = content.rindex(b"PK\x05\x06")
    directory_offset = struct.unpack_from("<I", content, end_record + 16)[0]
    struct.pack_into("<I", content, end_record + 16, directory_offset + 10**6)
    path.write_bytes(bytes(content))

    with pytest.raises(ValueError) as info:
        datasets.load_npz(path)

    assert str(path) in str(info.value)
    assert "not a valid .npz file" in str(info.value)


def test_npz_zero_features_rejected(tmp_path):
    path = _save_npz_with(tmp_path, x_train=np.zeros((8, 0)), x_test=np.zeros((4, 0)))

    with pytest.raises(ValueError) as info:
        datasets.load_npz(path)

    assert str(path) in str(info.value)
    assert "x_train has shape (8, 0), which is 0 features per sample" in str(info.value)


def test_npz_zero_width_images_rejected(tmp_path):
    path = _save_npz_with(
        tmp_path,
        x_train=np.zeros((8, 0, 5), dtype=np.uint8),
        x_test=np.zeros((4, 0, 5), dtype=np.uint8),
    )

    with pytest.raises(ValueError, match=r"shape \(8, 0, 5\), which is 0 features per sample"):
        datasets.load_npz(path)


class OpenedMembers:
    """Record the names of the zip members that ``zipfile.ZipFile.open`` opens."""

    def __init__(self, monkeypatch):
        self.names = []
        original_open = zipfile.ZipFile.open

        def recording_open(archive, member, *args, **kwargs):
            name = member.filename if isinstance(member, zipfile.ZipInfo) else member
            self.names.append(name)
            return original_open(archive, member, *args, **kwargs)

        monkeypatch.setattr(zipfile.ZipFile, "open", recording_open)


def write_npz_with_broken_member(path, arrays, broken_name):
    """Write an .npz of ``arrays`` plus a member whose deflate stream is invalid.

    Decompressing ``broken_name`` raises zlib.error, so a loader that opens it fails.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            with archive.open(key + ".npy", "w") as file:
                np.lib.format.write_array(file, np.asarray(array), allow_pickle=False)
        archive.writestr(broken_name, b"\x00" * 4096)

    # Overwrite the compressed bytes of the broken member with bytes that are
    # not a valid deflate stream.
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(broken_name)
    content = bytearray(path.read_bytes())
    name_length = len(info.filename.encode())
    data_offset = info.header_offset + 30 + name_length + len(info.extra)
    content[data_offset:data_offset + info.compress_size] = b"\xff" * info.compress_size
    path.write_bytes(bytes(content))


def test_npz_ignored_member_not_decompressed(tmp_path, monkeypatch):
    path = tmp_path / "data.npz"
    write_npz_with_broken_member(path, npz_arrays(), "bomb.npy")
    with zipfile.ZipFile(path) as archive, pytest.raises(zlib.error):
        archive.read("bomb.npy")
    opened = OpenedMembers(monkeypatch)

    data = datasets.load_npz(path)
    x, y = datasets.load_samples(path)

    assert data.x_train.shape == (8, 5)
    assert x.shape == (4, 5)
    assert y.shape == (4,)
    assert "bomb.npy" not in opened.names


def test_npz_wrong_dtype_rejected_before_data_read(tmp_path, monkeypatch):
    path = _save_npz_with(tmp_path, y_train=np.zeros(8, dtype=np.float64))
    reads = []
    monkeypatch.setattr(
        np.lib.format, "read_array", lambda *args, **kwargs: reads.append(args)
    )

    with pytest.raises(ValueError, match="y_train has dtype float64"):
        datasets.load_npz(path)

    # x_train comes before y_train in the archive, so at most its data was read.
    assert len(reads) <= 1


def test_npz_header_larger_than_data(tmp_path):
    path = tmp_path / "data.npz"
    arrays = npz_arrays()
    with zipfile.ZipFile(path, "w") as archive:
        for key, array in arrays.items():
            with archive.open(key + ".npy", "w") as file:
                if key == "x_train":
                    # A header for a (10**6, 10**6) float64 array, with 80 bytes of data.
                    header = {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)}
                    np.lib.format.write_array_header_1_0(file, header)
                    file.write(b"\x00" * 80)
                else:
                    np.lib.format.write_array(file, array)

    with pytest.raises(ValueError) as info:
        datasets.load_npz(path)

    assert "x_train has shape (1000000, 1000000)" in str(info.value)
    assert "the file stores 80" in str(info.value)
    assert "truncated or damaged" in str(info.value)


def test_npz_array_larger_than_memory(tmp_path, monkeypatch):
    path = _save_npz_with(tmp_path)
    monkeypatch.setattr(datasets, "_memory_limit_bytes", lambda: 100)

    with pytest.raises(ValueError) as info:
        datasets.load_npz(path)

    assert "x_train has shape (8, 5) and dtype float64, which need 320 bytes" in str(info.value)
    assert "more than the 100 bytes of memory" in str(info.value)


def test_memory_limit_is_positive_or_none():
    limit = datasets._memory_limit_bytes()

    assert limit is None or limit > 0


def test_npz_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        datasets.load_npz(tmp_path / "absent.npz")


# ---------------------------------------------------------------------------
# IDX parsing
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype", list(IDX_TYPE_CODES), ids=[dtype.name for dtype in IDX_TYPE_CODES]
)
def test_idx_roundtrip_every_type(dtype):
    rng = np.random.default_rng(2)
    array = (rng.standard_normal((3, 4, 2)) * 50).astype(dtype)

    parsed = datasets.parse_idx(idx_bytes(array))

    assert parsed.dtype == dtype
    assert parsed.dtype.isnative
    np.testing.assert_array_equal(parsed, array)


@pytest.mark.parametrize("shape", [(7,), (2, 3), (2, 3, 4, 1)], ids=["1d", "2d", "4d"])
def test_idx_roundtrip_shapes(shape):
    array = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)

    np.testing.assert_array_equal(datasets.parse_idx(idx_bytes(array)), array)


def test_idx_empty_dimension():
    array = np.zeros((0, 28, 28), dtype=np.uint8)

    assert datasets.parse_idx(idx_bytes(array)).shape == (0, 28, 28)


def test_idx_reads_big_endian():
    data = struct.pack(">BBBBI", 0, 0, 0x0B, 1, 2) + struct.pack(">hh", 258, -2)

    np.testing.assert_array_equal(datasets.parse_idx(data), [258, -2])


def _valid_labels():
    return idx_bytes(np.arange(5, dtype=np.uint8))


IDX_ERRORS = [
    ("too_short", b"\x00\x00", "truncated IDX header"),
    ("bad_magic", b"\x01\x02" + _valid_labels()[2:], "invalid IDX magic number 0x01020801"),
    ("bad_type", b"\x00\x00\x07\x01" + _valid_labels()[4:], "invalid IDX type code 0x07"),
    ("zero_dims", b"\x00\x00\x08\x00", "0 dimensions"),
    ("truncated_dims", b"\x00\x00\x08\x03" + struct.pack(">I", 5), "truncated IDX header"),
    ("truncated_data", _valid_labels()[:-1], "truncated IDX data"),
    ("trailing_bytes", _valid_labels() + b"\x00", "1 unexpected bytes"),
]


@pytest.mark.parametrize(
    "data, message", [case[1:] for case in IDX_ERRORS], ids=[case[0] for case in IDX_ERRORS]
)
def test_idx_malformed(tmp_path, data, message):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(data)

    with pytest.raises(ValueError) as info:
        datasets.read_idx(path)

    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_idx_gzip_roundtrip(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "images.gz", array, compress=True)

    np.testing.assert_array_equal(datasets.read_idx(path), array)


def test_idx_truncated_gzip(tmp_path):
    path = write_idx(tmp_path / "images.gz", np.zeros((50, 8, 8), np.uint8), compress=True)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) - 12])

    with pytest.raises(ValueError) as info:
        datasets.read_idx(path)

    assert str(path) in str(info.value)
    assert "gzip" in str(info.value)


def test_idx_gz_name_without_gzip_data(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(_valid_labels())

    with pytest.raises(ValueError, match="invalid or truncated gzip data"):
        datasets.read_idx(path)


def test_idx_truncated_inside_gzip(tmp_path):
    path = tmp_path / "labels.gz"
    with gzip.open(path, "wb") as file:
        file.write(_valid_labels()[:-2])

    with pytest.raises(ValueError, match="truncated IDX data"):
        datasets.read_idx(path)


def test_idx_gzip_trailing_data_not_decompressed(tmp_path):
    # 64 MB of zeros after a 5-byte IDX payload compress to about 64 KB. Only
    # the declared size plus one byte may be decompressed.
    path = tmp_path / "labels.gz"
    with gzip.open(path, "wb") as file:
        file.write(_valid_labels())
        for _ in range(64):
            file.write(bytes(2**20))

    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="unexpected bytes after the IDX data"):
            datasets.read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 4 * 2**20


def test_idx_gzip_declared_size_beyond_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_memory_limit_bytes", lambda: 1000)
    path = tmp_path / "images.gz"
    header = struct.pack(">BBBB3I", 0, 0, 0x08, 3, 10, 28, 28)
    with gzip.open(path, "wb") as file:
        file.write(header)

    with pytest.raises(ValueError) as info:
        datasets.read_idx(path)

    assert str(path) in str(info.value)
    assert "needs 7.7 KiB, more than the 1000 bytes of memory" in str(info.value)


# ---------------------------------------------------------------------------
# MNIST folder
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "compress",
    [(), tuple(datasets.MNIST_FILES), ("x_train", "y_test")],
    ids=["plain", "gzipped", "mixed"],
)
def test_mnist_folder(tmp_path, compress):
    arrays = write_mnist_folder(tmp_path, compress=compress)

    data = datasets.load_mnist_idx(tmp_path)

    assert data.x_train.shape == (12, 12)
    assert data.x_test.shape == (5, 12)
    assert data.x_train.dtype == np.float32
    np.testing.assert_allclose(data.x_train, arrays["x_train"].reshape(12, 12) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(data.x_test, arrays["x_test"].reshape(5, 12) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_train, arrays["y_train"])
    np.testing.assert_array_equal(data.y_test, arrays["y_test"])


def test_mnist_folder_prefers_uncompressed(tmp_path):
    write_mnist_folder(tmp_path)
    labels_gz = tmp_path / (datasets.MNIST_FILES["y_test"] + ".gz")
    write_idx(labels_gz, np.full(5, 9, dtype=np.uint8), compress=True)

    data = datasets.load_mnist_idx(tmp_path)

    assert not np.all(data.y_test == 9)


def test_mnist_folder_missing_file(tmp_path):
    write_mnist_folder(tmp_path)
    os.remove(tmp_path / datasets.MNIST_FILES["y_train"])

    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        datasets.load_mnist_idx(tmp_path)


def test_mnist_folder_not_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        datasets.load_mnist_idx(tmp_path / "absent")


def test_mnist_images_must_be_uint8(tmp_path):
    write_mnist_folder(tmp_path)
    path = tmp_path / datasets.MNIST_FILES["x_train"]
    write_idx(path, np.zeros((12, 4, 3), dtype=np.int16))

    with pytest.raises(ValueError) as info:
        datasets.load_mnist_idx(tmp_path)

    assert str(path) in str(info.value)
    assert "expected uint8 with 3 dimension(s)" in str(info.value)


def test_mnist_labels_must_be_1d(tmp_path):
    write_mnist_folder(tmp_path)
    path = tmp_path / datasets.MNIST_FILES["y_test"]
    write_idx(path, np.zeros((5, 1), dtype=np.uint8))

    with pytest.raises(ValueError, match="expected uint8 with 1 dimension"):
        datasets.load_mnist_idx(tmp_path)


def test_mnist_count_mismatch(tmp_path):
    write_mnist_folder(tmp_path)
    write_idx(tmp_path / datasets.MNIST_FILES["y_train"], np.zeros(11, dtype=np.uint8))

    with pytest.raises(ValueError, match="x_train has 12 samples but y_train has 11"):
        datasets.load_mnist_idx(tmp_path)


def test_mnist_zero_width_images_rejected(tmp_path):
    write_mnist_folder(tmp_path, rows=0, cols=5)

    with pytest.raises(ValueError) as info:
        datasets.load_mnist_idx(tmp_path)

    assert str(tmp_path) in str(info.value)
    assert "x_train has shape (12, 0, 5), which is 0 features per sample" in str(info.value)


def test_mnist_truncated_file(tmp_path):
    write_mnist_folder(tmp_path)
    path = tmp_path / datasets.MNIST_FILES["x_test"]
    path.write_bytes(path.read_bytes()[:-5])

    with pytest.raises(ValueError) as info:
        datasets.load_mnist_idx(tmp_path)

    assert str(path) in str(info.value)
    assert "truncated IDX data" in str(info.value)


# ---------------------------------------------------------------------------
# load_dataset and load_samples
# ---------------------------------------------------------------------------


def test_load_dataset_folder_and_npz(tmp_path):
    write_mnist_folder(tmp_path / "mnist")
    np.savez(tmp_path / "data.npz", **npz_arrays())

    assert datasets.load_dataset(tmp_path / "mnist").x_train.shape == (12, 12)
    assert datasets.load_dataset(tmp_path / "data.npz").x_train.shape == (8, 5)


def test_load_dataset_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        datasets.load_dataset(tmp_path / "absent.npz")


def test_load_dataset_unknown_extension(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("1,2,3\n")

    with pytest.raises(ValueError, match="unsupported data file"):
        datasets.load_dataset(path)


def test_samples_from_training_npz(tmp_path):
    arrays = npz_arrays()
    np.savez(tmp_path / "data.npz", **arrays)

    x, y = datasets.load_samples(tmp_path / "data.npz")

    np.testing.assert_array_equal(x, arrays["x_test"].astype(np.float32))
    np.testing.assert_array_equal(y, arrays["y_test"])


def test_samples_npz_without_labels(tmp_path):
    np.savez(tmp_path / "data.npz", x_test=np.ones((3, 2)))

    x, y = datasets.load_samples(tmp_path / "data.npz")

    assert x.shape == (3, 2)
    assert y is None


def test_samples_npz_without_x_test(tmp_path):
    np.savez(tmp_path / "data.npz", x=np.ones((3, 2)))

    with pytest.raises(ValueError, match="missing array x_test"):
        datasets.load_samples(tmp_path / "data.npz")


def test_samples_npy(tmp_path):
    np.save(tmp_path / "x.npy", np.full((2, 2, 2), 255, dtype=np.uint8))

    x, y = datasets.load_samples(tmp_path / "x.npy")

    np.testing.assert_array_equal(x, np.ones((2, 4), dtype=np.float32))
    assert y is None


def test_samples_text_file_named_npy(tmp_path):
    path = tmp_path / "x.npy"
    path.write_text("0.5 0.25\n1.0 0.0\n")

    with pytest.raises(ValueError) as info:
        datasets.load_samples(path)

    assert str(path) in str(info.value)
    assert "not a valid .npy file" in str(info.value)
    assert "pickled" not in str(info.value)


def test_samples_npy_object_array_rejected(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.array([[1, None]], dtype=object), allow_pickle=True)

    with pytest.raises(ValueError, match="has dtype object"):
        datasets.load_samples(path)


def test_samples_npy_truncated(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.ones((4, 3)))
    path.write_bytes(path.read_bytes()[:-8])

    with pytest.raises(ValueError, match="truncated or damaged"):
        datasets.load_samples(path)


def test_samples_npy_fortran_order_uint8_is_c_contiguous(tmp_path):
    path = tmp_path / "x.npy"
    images = np.asfortranarray(np.arange(12, dtype=np.uint8).reshape(3, 4))
    np.save(path, images)

    x, _ = datasets.load_samples(path)

    assert x.flags.c_contiguous
    np.testing.assert_array_equal(x, images.astype(np.float32) * np.float32(1 / 255))


def test_samples_npy_unterminated_header_string(tmp_path):
    # NumPy's header parser raises tokenize.TokenError, not ValueError, for
    # an unterminated string.
    path = tmp_path / "x.npy"
    header = b"{'descr': '<f4" + b" " * 49 + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header)

    with pytest.raises(ValueError) as info:
        datasets.load_samples(path)

    assert str(path) in str(info.value)
    assert "not a valid .npy file" in str(info.value)


def test_samples_npy_header_with_bytes_key(tmp_path):
    # NumPy sorts the header keys and raises TypeError for bytes next to str.
    path = tmp_path / "x.npy"
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), b'x': 1}"
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(8))

    with pytest.raises(ValueError) as info:
        datasets.load_samples(path)

    assert str(path) in str(info.value)
    assert "not a valid .npy file" in str(info.value)


def test_samples_npy_negative_dimension(tmp_path):
    # With a negative dimension the product of the shape is negative, so the
    # size checks passed. NumPy's int64 product wraps around to 2**62, and it
    # raised MemoryError for 4 EiB.
    path = tmp_path / "x.npy"
    header = b"{'descr': '|u1', 'fortran_order': False, 'shape': (-1, 4611686018427387904, 3), }"
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(8))

    with pytest.raises(ValueError) as info:
        datasets.load_samples(path)

    assert str(path) in str(info.value)
    assert "has a negative dimension" in str(info.value)


def test_samples_npy_zero_features(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.ones((4, 0)))

    with pytest.raises(ValueError, match="0 features per sample"):
        datasets.load_samples(path)


def test_samples_mnist_folder_without_labels(tmp_path):
    arrays = write_mnist_folder(tmp_path)
    os.remove(tmp_path / datasets.MNIST_FILES["y_test"])

    x, y = datasets.load_samples(tmp_path)

    np.testing.assert_allclose(x, arrays["x_test"].reshape(5, 12) / 255.0, rtol=1e-6)
    assert y is None


def test_samples_mnist_folder_with_labels(tmp_path):
    arrays = write_mnist_folder(tmp_path, compress=("x_test", "y_test"))

    x, y = datasets.load_samples(tmp_path)

    assert x.shape == (5, 12)
    np.testing.assert_array_equal(y, arrays["y_test"])


# ---------------------------------------------------------------------------
# Non-finite features
# ---------------------------------------------------------------------------


NONFINITE_MESSAGE = re.compile(
    r"(?P<name>\w+) contains (?P<count>\d+) NaN or infinite value\(s\) \(first at row "
    r"(?P<row>\d+), column (?P<column>\d+), counted from 0\)"
)


def parse_nonfinite_message(message):
    match = NONFINITE_MESSAGE.search(message)
    assert match, message
    return match["name"], int(match["count"]), int(match["row"]), int(match["column"])


@pytest.mark.parametrize("key", ["x_train", "x_test"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_npz_nonfinite_features_rejected(tmp_path, key, dtype):
    arrays = npz_arrays(n_train=8, n_test=6)
    x = arrays[key].astype(dtype)
    x[4, 3] = np.nan
    x[4, 1] = np.inf
    x[5, 0] = -np.inf
    arrays[key] = x
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)

    with pytest.raises(ValueError) as info:
        datasets.load_npz(path)

    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert parse_nonfinite_message(message) == (key, 3, 4, 1)


def test_npz_float64_beyond_float32_range_rejected(tmp_path):
    arrays = npz_arrays()
    arrays["x_test"][2, 4] = 1e39
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)

    with pytest.raises(ValueError) as info:
        datasets.load_npz(path)

    assert parse_nonfinite_message(str(info.value)) == ("x_test", 1, 2, 4)
    assert "float32 range" in str(info.value)


def test_npz_largest_float32_accepted(tmp_path):
    arrays = npz_arrays()
    largest = np.finfo(np.float32).max
    arrays["x_train"][0, 0] = largest
    arrays["x_train"][1, 1] = -largest
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)

    data = datasets.load_npz(path)

    assert data.x_train[0, 0] == largest
    assert data.x_train[1, 1] == -largest


def test_samples_npy_nonfinite_rejected(tmp_path):
    x = np.zeros((10, 2, 3), dtype=np.float32)
    x[7, 1, 2] = np.nan   # row 7, flattened column 1 * 3 + 2
    path = tmp_path / "x.npy"
    np.save(path, x)

    with pytest.raises(ValueError) as info:
        datasets.load_samples(path)

    assert parse_nonfinite_message(str(info.value)) == ("array", 1, 7, 5)


def test_samples_npz_nonfinite_rejected(tmp_path):
    x_test = np.ones((4, 3))
    x_test[3, 2] = np.nan
    path = tmp_path / "data.npz"
    np.savez(path, x_test=x_test)

    with pytest.raises(ValueError) as info:
        datasets.load_samples(path)

    assert parse_nonfinite_message(str(info.value)) == ("x_test", 1, 3, 2)


def test_nonfinite_count_across_blocks(monkeypatch):
    # Blocks of 2 rows of 5 columns: the non-finite values sit in several blocks.
    monkeypatch.setattr(datasets, "FINITE_CHECK_ELEMENTS", 10)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((23, 5)).astype(np.float32)
    positions = [(9, 4), (9, 0), (10, 2), (17, 3), (22, 4)]
    for row, column in positions:
        x[row, column] = np.nan if row % 2 else np.inf

    with pytest.raises(ValueError) as info:
        datasets._as_features(x, "x_test", "source.npz")

    assert parse_nonfinite_message(str(info.value)) == ("x_test", len(positions), 9, 0)
    assert int(np.count_nonzero(~np.isfinite(x))) == len(positions)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int64, np.uint64, np.bool_])
def test_integer_features_skip_finite_check(monkeypatch, dtype):
    def failing_check(*args, **kwargs):
        raise AssertionError("integer features cannot be NaN or infinite")

    monkeypatch.setattr(datasets, "_check_finite", failing_check)
    x = np.ones((3, 4), dtype=dtype)

    features = datasets._as_features(x, "x_train", "source.npz")

    assert features.dtype == np.float32
    assert np.all(np.isfinite(features))


def test_finite_check_memory_is_bounded():
    # 16 Mi float32 features: a mask of the whole matrix would take 16 MiB.
    x = np.ones((2**16, 256), dtype=np.float32)

    tracemalloc.start()
    try:
        features = datasets._as_features(x, "x_train", "source.npz")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert np.shares_memory(features, x)
    assert peak < 4 * 2**20
