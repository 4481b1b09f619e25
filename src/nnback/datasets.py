"""Load classification data sets as float32 feature matrices and integer labels.

Every loader returns a :class:`Dataset` of four arrays:

* ``x_train`` (n_train, n_features) and ``x_test`` (n_test, n_features): finite
  float32 values, C-contiguous, one flattened sample per row;
* ``y_train`` (n_train,) and ``y_test`` (n_test,): int64 class indices >= 0.

Sources:

* :func:`load_digits`: the 8x8 handwritten digits that ship with scikit-learn
  (1797 samples, 64 features, 10 classes), split into train and test sets with a
  fixed seed and scaled from 0..16 to [0, 1].
* :func:`load_npz`: a NumPy ``.npz`` archive with the arrays ``x_train``,
  ``y_train``, ``x_test`` and ``y_test``.
* :func:`load_mnist_idx`: a folder with the four MNIST files in IDX format, each
  optionally gzip-compressed.
* :func:`load_dataset`: either of the last two, chosen by the path.

Features are converted as follows: uint8 arrays (8-bit images) are divided by 255,
so they lie in [0, 1]. Other integer, bool and floating-point arrays are converted
to float32 without scaling. Samples with more than one dimension (images of shape
(n, 28, 28), for example) are flattened to one row each. Features that are NaN or
infinite after the conversion raise ValueError with their count and the first
position, since a network cannot train on them or predict from them. This
includes float64 values beyond the float32 range (about 3.4e38). The check reads
the converted matrix in blocks and is skipped for integer and bool input, which
cannot be non-finite.

Malformed input raises ValueError with a message that names the file and what is
wrong. A missing file raises FileNotFoundError.

.npz and .npy files are read without pickle, and only the arrays that a loader
needs are decompressed. The shape and dtype of each needed array are checked
from its .npy header first, so an archive member that is ignored, has the wrong
dtype or shape, or would not fit in memory costs no decompression.
"""

import errno
import gzip
import math
import numbers
import os
import stat
import struct
import tokenize
import zipfile
import zlib
from typing import Any, NamedTuple

import numpy as np

from nnback._files import read_regular_file_start

DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

# The first bytes of a zip archive (a local file header, or the end-of-directory
# record of an empty archive) and of an .npy file.
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
NPY_MAGIC = b"\x93NUMPY"

# Errors that zipfile, zlib and numpy.lib.format raise for damaged input.
# zipfile raises RuntimeError for an encrypted member and NotImplementedError for
# an unsupported compression method. numpy.lib.format lets tokenize.TokenError
# escape from some malformed .npy headers, such as an unterminated string, and
# raises TypeError for a header dict whose keys cannot be sorted (bytes and str).
_ARCHIVE_ERRORS = (
    ValueError, EOFError, zlib.error, zipfile.BadZipFile, RuntimeError, NotImplementedError,
    tokenize.TokenError, TypeError,
)


def _is_archive_damage(exc):
    """Return whether ``exc``, raised while reading a zip archive, comes from damaged data.

    zipfile seeks to the member offsets that the archive records, and a
    negative offset fails with OSError EINVAL. Other OSErrors are real I/O
    errors and are not damage.
    """
    return not isinstance(exc, OSError) or exc.errno == errno.EINVAL

# The four files of the MNIST distribution. Each may also be stored with a
# ".gz" suffix.
MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

# IDX type codes (the third byte of the magic number) and the big-endian NumPy
# dtype of the data that follows the header.
IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class Dataset(NamedTuple):
    """Train and test arrays of a classification data set.

    The loaders of this module return it. It is a named tuple, so
    ``x_train, y_train, x_test, y_test = dataset`` unpacks it.

    Parameters
    ----------
    x_train : ndarray, shape (n_train, n_features)
        Training samples, float32 from the loaders.
    y_train : ndarray, shape (n_train,)
        Training labels, int64 class indices >= 0 from the loaders.
    x_test : ndarray, shape (n_test, n_features)
        Test samples.
    y_test : ndarray, shape (n_test,)
        Test labels.

    Examples
    --------
    >>> import numpy as np
    >>> from nnback.datasets import Dataset
    >>> data = Dataset(np.zeros((4, 3), np.float32), np.array([0, 1, 2, 1]),
    ...                np.zeros((2, 3), np.float32), np.array([1, 0]))
    >>> data.n_features, data.n_classes
    (3, 3)
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_features(self):
        """Number of features per sample."""
        return self.x_train.shape[1]

    @property
    def n_classes(self):
        """Number of classes: the largest label of either split plus one."""
        labels = [y.max() for y in (self.y_train, self.y_test) if y.size]
        return int(max(labels)) + 1 if labels else 0


# ---------------------------------------------------------------------------
# scikit-learn's digits
# ---------------------------------------------------------------------------


def load_digits(test_fraction=DIGITS_TEST_FRACTION, seed=DIGITS_SPLIT_SEED):
    """Load scikit-learn's 8x8 digits, scaled to [0, 1] and split into train and test.

    The split is stratified by class and depends only on ``test_fraction`` and
    ``seed``. With the defaults, the test set has 450 of the 1797 samples.
    Requires scikit-learn, which ships the data.

    Parameters
    ----------
    test_fraction : float, default 0.25
        Fraction of the samples in the test set, passed to
        ``sklearn.model_selection.train_test_split`` as ``test_size``.
    seed : int, default 0
        Seed of the split.

    Returns
    -------
    Dataset
        Features of shape (n, 64) and dtype float32 in [0, 1], and int64
        labels from 0 to 9.

    Raises
    ------
    ImportError
        If scikit-learn is not installed.
    ValueError
        If ``test_fraction`` is not a number in (0, 1), or ``seed`` is not an
        int in [0, 2**32 - 1].

    Examples
    --------
    >>> from nnback.datasets import load_digits
    >>> data = load_digits()
    >>> data.x_train.shape, data.x_test.shape, data.n_classes
    ((1347, 64), (450, 64), 10)
    >>> data.x_train.dtype, data.y_train.dtype
    (dtype('float32'), dtype('int64'))
    """
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise ImportError(
            "the digits data set ships with scikit-learn, which is not installed: "
            "install it with 'pip install scikit-learn' or pass another data set"
        ) from exc

    test_fraction, seed = _checked_split_arguments(test_fraction, seed)
    digits = sklearn_load_digits()
    # Pixel values are integers from 0 to 16.
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return Dataset(
        np.ascontiguousarray(x_train),
        np.ascontiguousarray(y_train),
        np.ascontiguousarray(x_test),
        np.ascontiguousarray(y_test),
    )


def _checked_split_arguments(test_fraction, seed):
    """Return (test_fraction, seed) as float and int, or raise ValueError naming the argument.

    train_test_split would also take an int test_size as a sample count, and
    its errors name its own arguments, test_size and random_state.
    """
    if isinstance(test_fraction, (bool, np.bool_)) or not isinstance(test_fraction, numbers.Real):
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an int in [0, 2**32 - 1], got {seed!r}")
    if not 0 <= int(seed) <= 2**32 - 1:
        raise ValueError(f"seed must be an int in [0, 2**32 - 1], got {seed!r}")
    return float(test_fraction), int(seed)


# ---------------------------------------------------------------------------
# Conversion and checks shared by the file loaders
# ---------------------------------------------------------------------------


def _check_feature_layout(shape, dtype, name, source):
    """Raise ValueError unless an array of ``shape`` and ``dtype`` can be a feature matrix.

    ``name`` and ``source`` identify the array in error messages.
    """
    if len(shape) < 2:
        raise ValueError(
            f"{source}: {name} has shape {shape}: expected at least 2 "
            f"dimensions (samples first, then features or pixels)"
        )
    if dtype.kind not in "biuf":
        raise ValueError(
            f"{source}: {name} has dtype {dtype}: expected an integer, bool "
            f"or floating-point array"
        )
    if math.prod(shape[1:]) == 0:
        raise ValueError(
            f"{source}: {name} has shape {shape}, which is 0 features per sample: "
            f"expected at least 1 feature"
        )


def _check_label_layout(shape, dtype, name, source):
    """Raise ValueError unless an array of ``shape`` and ``dtype`` can be a label vector."""
    if len(shape) != 1:
        raise ValueError(
            f"{source}: {name} has shape {shape}: expected a 1-D array of "
            f"class labels"
        )
    if dtype.kind not in "iu":
        raise ValueError(
            f"{source}: {name} has dtype {dtype}: expected integer class "
            f"labels"
        )


def _as_features(array, name, source):
    """Return ``array`` as a float32 (n_samples, n_features) matrix of finite values.

    ``name`` and ``source`` identify the array in error messages.
    """
    _check_feature_layout(array.shape, array.dtype, name, source)

    # An explicit width, because reshape(0, -1) cannot infer it for 0 samples.
    flat = array.reshape(array.shape[0], math.prod(array.shape[1:]))
    if array.dtype == np.uint8:
        # 8-bit images: 0..255 maps to [0, 1]. The ufunc would keep the memory
        # order of a Fortran-order input, so C order is requested.
        return np.multiply(flat, np.float32(1.0 / 255.0), dtype=np.float32, order="C")
    # Values beyond the float32 range become infinities, which the check
    # below reports, so NumPy's overflow warning would only repeat it.
    with np.errstate(over="ignore"):
        features = np.ascontiguousarray(flat, dtype=np.float32)
    # Integer and bool values stay finite in float32, whose range (about
    # 3.4e38) exceeds that of every NumPy integer type. Floating-point input is
    # checked after the conversion, which turns float64 values beyond the
    # float32 range into infinities.
    if array.dtype.kind == "f":
        _check_finite(features, name, source, beyond_float32=array.dtype.itemsize > 4)
    return features


# Elements per block of the finiteness check, so that its boolean temporaries
# stay near 1 MiB whatever the size of the data set.
FINITE_CHECK_ELEMENTS = 1 << 20


def _check_finite(features, name, source, beyond_float32):
    """Raise ValueError if the float32 matrix ``features`` contains NaN or an infinity.

    The rows are checked in blocks of about FINITE_CHECK_ELEMENTS elements, so
    no temporary as large as the matrix is allocated. ``beyond_float32`` adds
    to the message that the input had a wider type, so an infinity can come
    from a finite value that float32 cannot represent.
    """
    n_rows, n_columns = features.shape
    rows_per_block = max(1, FINITE_CHECK_ELEMENTS // n_columns)
    n_nonfinite = 0
    first = None
    for start in range(0, n_rows, rows_per_block):
        nonfinite = ~np.isfinite(features[start:start + rows_per_block])
        count = int(np.count_nonzero(nonfinite))
        if count and first is None:
            row, column = np.unravel_index(np.argmax(nonfinite), nonfinite.shape)
            first = (start + int(row), int(column))
        n_nonfinite += count
    if first is None:
        return

    advice = "replace missing values before loading the data"
    if beyond_float32:
        advice += (
            " and rescale values beyond the float32 range (about 3.4e38), which "
            "become infinite in float32"
        )
    raise ValueError(
        f"{source}: {name} contains {n_nonfinite} NaN or infinite value(s) (first at "
        f"row {first[0]}, column {first[1]}, counted from 0), but training and "
        f"prediction need finite features: {advice}"
    )


def _as_labels(array, name, source):
    """Return ``array`` as an int64 vector of class indices >= 0."""
    _check_label_layout(array.shape, array.dtype, name, source)
    if array.size and array.min() < 0:
        raise ValueError(
            f"{source}: {name} contains the negative label {array.min()}: expected "
            f"class indices >= 0"
        )
    if array.dtype.kind == "u" and array.size and array.max() > np.iinfo(np.int64).max:
        raise ValueError(
            f"{source}: {name} contains the label {array.max()}, which does not fit "
            f"in int64"
        )
    return array.astype(np.int64)


# Layout checks of the arrays that the loaders read, by the role of the array.
_LAYOUT_CHECKS = {"features": _check_feature_layout, "labels": _check_label_layout}


def _check_split(x, y, x_name, y_name, source):
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{source}: {x_name} has {x.shape[0]} samples but {y_name} has "
            f"{y.shape[0]} labels: expected the same number"
        )


def _make_dataset(arrays, source):
    """Check and convert a dict with the four raw arrays of ``NPZ_KEYS``."""
    x_train = _as_features(arrays["x_train"], "x_train", source)
    x_test = _as_features(arrays["x_test"], "x_test", source)
    y_train = _as_labels(arrays["y_train"], "y_train", source)
    y_test = _as_labels(arrays["y_test"], "y_test", source)

    _check_split(x_train, y_train, "x_train", "y_train", source)
    _check_split(x_test, y_test, "x_test", "y_test", source)
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(
            f"{source}: x_train has {x_train.shape[1]} features per sample but "
            f"x_test has {x_test.shape[1]}: expected the same number"
        )
    if x_train.shape[0] == 0:
        raise ValueError(f"{source}: x_train has no samples")
    return Dataset(x_train, y_train, x_test, y_test)


# ---------------------------------------------------------------------------
# .npy headers and .npz archives
# ---------------------------------------------------------------------------

# The role of each array of a training archive.
NPZ_ROLES = {"x_train": "features", "y_train": "labels", "x_test": "features", "y_test": "labels"}


def _memory_limit_bytes():
    """Return the memory available to this process in bytes, or None if the OS does not report it.

    This is the physical memory of the machine (``os.sysconf``), or the cgroup
    v2 limit in /sys/fs/cgroup/memory.max when that is lower, as inside a
    container with a memory limit.
    """
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as file:
            text = file.read().strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    if text.isdigit():
        limits.append(int(text))
    positive = [limit for limit in limits if limit > 0]
    return min(positive) if positive else None


def _format_bytes(n_bytes):
    """Return a byte count as a short text such as '3.2 GiB'."""
    value = float(n_bytes)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    if unit == "bytes":
        return f"{n_bytes} bytes"
    return f"{value:.1f} {unit}"


def _read_signature(path, size=8):
    """Return the first ``size`` bytes of the file at ``path``, which must be a regular file."""
    return read_regular_file_start(
        path, size, f"{path}: not a regular file (a FIFO, socket or device)"
    )


def _read_npy_header(file):
    """Read the .npy header at the position of ``file`` and return (shape, fortran_order, dtype).

    Leaves ``file`` at the first byte of the array data. Raises ValueError for a
    wrong magic string, a malformed header, a negative dimension, or a format
    version other than 1.0 and 2.0. NumPy writes version 3.0 only for structured
    dtypes with field names outside latin-1, which no loader here accepts.
    """
    version = np.lib.format.read_magic(file)
    if version == (1, 0):
        header = np.lib.format.read_array_header_1_0(file)
    elif version == (2, 0):
        header = np.lib.format.read_array_header_2_0(file)
    else:
        raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    # NumPy accepts negative dimensions in the header. They would make the
    # size checks below pass and the allocation in read_array fail.
    shape = header[0]
    if any(size < 0 for size in shape):
        raise ValueError(f"invalid .npy header: shape {shape} has a negative dimension")
    return header


def _check_npy_data(shape, dtype, data_size, name, source):
    """Raise ValueError if the data after a .npy header is truncated or would not fit in memory.

    ``data_size`` is the number of bytes that follow the header in the file.
    """
    n_bytes = math.prod(shape) * dtype.itemsize
    if data_size < n_bytes:
        raise ValueError(
            f"{source}: {name} has shape {shape} and dtype {dtype}, which need "
            f"{n_bytes} bytes of data, but the file stores {data_size}: the file is "
            f"truncated or damaged"
        )
    limit = _memory_limit_bytes()
    if limit is not None and n_bytes > limit:
        raise ValueError(
            f"{source}: {name} has shape {shape} and dtype {dtype}, which need "
            f"{_format_bytes(n_bytes)}, more than the {_format_bytes(limit)} of "
            f"memory of this machine"
        )


def _open_npz(path):
    """Open the .npz file at ``path`` as a ZipFile after checking that it is a zip archive."""
    signature = _read_signature(path)
    if signature.startswith(NPY_MAGIC):
        raise ValueError(
            f"{path}: not a valid .npz file: it contains a single .npy array, not an "
            f"archive of named arrays"
        )
    if not signature.startswith(ZIP_SIGNATURES):
        raise ValueError(
            f"{path}: not a valid .npz file: expected a zip archive of .npy arrays, "
            f"but the file starts with {signature!r}"
        )
    try:
        return zipfile.ZipFile(path)
    except (*_ARCHIVE_ERRORS, OSError) as exc:
        if not _is_archive_damage(exc):
            raise
        raise ValueError(
            f"{path}: not a valid .npz file: the zip archive is truncated or damaged ({exc})"
        ) from exc


def _npz_members(archive):
    """Return a dict from array name to member name, named as ``np.load`` names them."""
    members = {}
    for member in archive.namelist():
        key = member[: -len(".npy")] if member.endswith(".npy") else member
        members[key] = member
    return members


def _read_npz_array(archive, member, role, name, source):
    """Read one array of an .npz archive after checking its header.

    The layout check for ``role`` ("features" or "labels") and the size checks
    run on the .npy header. A member with the wrong shape or dtype, or one that
    would not fit in memory, is therefore rejected before its data is
    decompressed.
    """
    info = archive.getinfo(member)
    try:
        with archive.open(info) as file:
            shape, _, dtype = _read_npy_header(file)
            header_size = file.tell()
    except (*_ARCHIVE_ERRORS, OSError) as exc:
        if not _is_archive_damage(exc):
            raise
        raise ValueError(f"{source}: not a valid .npz file: {name}: {exc}") from exc

    _LAYOUT_CHECKS[role](shape, dtype, name, source)
    _check_npy_data(shape, dtype, info.file_size - header_size, name, source)

    try:
        with archive.open(info) as file:
            return np.lib.format.read_array(file, allow_pickle=False)
    except (*_ARCHIVE_ERRORS, OSError) as exc:
        if not _is_archive_damage(exc):
            raise
        raise ValueError(f"{source}: not a valid .npz file: {name}: {exc}") from exc


def load_npz(path):
    """Load a :class:`Dataset` from an .npz file with x_train, y_train, x_test, y_test.

    Other arrays in the file are ignored and never decompressed. Features and
    labels are converted as the module documentation describes.

    Parameters
    ----------
    path : str or os.PathLike
        The .npz file.

    Returns
    -------
    Dataset

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a valid .npz archive, or an array is missing, has the
        wrong ndim or dtype, is truncated or would not fit in memory. Also if a
        label is negative, a feature is NaN or infinite as float32, features
        and labels differ in their sample counts, the splits differ in their
        feature counts, or x_train has no samples.

    Examples
    --------
    8-bit images are flattened and scaled to [0, 1]:

    >>> import os, tempfile
    >>> import numpy as np
    >>> from nnback.datasets import load_npz
    >>> images = np.full((3, 2, 2), 255, dtype=np.uint8)
    >>> labels = np.array([0, 1, 1], dtype=np.uint8)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "data.npz")
    ...     np.savez(path, x_train=images, y_train=labels, x_test=images[:1], y_test=labels[:1])
    ...     data = load_npz(path)
    >>> data.x_train.shape, data.x_train.dtype, float(data.x_train.max())
    ((3, 4), dtype('float32'), 1.0)
    >>> data.y_train
    array([0, 1, 1])
    """
    path = os.fsdecode(os.fspath(path))
    with _open_npz(path) as archive:
        members = _npz_members(archive)
        missing = [key for key in NPZ_KEYS if key not in members]
        if missing:
            raise ValueError(
                f"{path}: missing array(s) {', '.join(missing)}: expected the arrays "
                f"{', '.join(NPZ_KEYS)} (found: {', '.join(sorted(members)) or 'none'})"
            )
        arrays = {
            key: _read_npz_array(archive, members[key], role, key, path)
            for key, role in NPZ_ROLES.items()
        }
    return _make_dataset(arrays, path)


def _read_npy(path, role, name):
    """Read the .npy file at ``path`` after checking its header, like :func:`_read_npz_array`."""
    signature = _read_signature(path)
    if not signature.startswith(NPY_MAGIC):
        raise ValueError(
            f"{path}: not a valid .npy file: expected the .npy magic string "
            f"{NPY_MAGIC!r} at the start, but the file starts with {signature!r}"
        )
    with open(path, "rb") as file:
        try:
            shape, _, dtype = _read_npy_header(file)
        except _ARCHIVE_ERRORS as exc:
            raise ValueError(f"{path}: not a valid .npy file: {exc}") from exc
        _LAYOUT_CHECKS[role](shape, dtype, name, path)
        _check_npy_data(shape, dtype, os.fstat(file.fileno()).st_size - file.tell(), name, path)

        file.seek(0)
        try:
            return np.lib.format.read_array(file, allow_pickle=False)
        except _ARCHIVE_ERRORS as exc:
            raise ValueError(f"{path}: not a valid .npy file: {exc}") from exc


# ---------------------------------------------------------------------------
# IDX files (the MNIST format)
# ---------------------------------------------------------------------------


def _read_bytes(path):
    """Return the content of ``path``, decompressed when the name ends in .gz."""
    _read_signature(path, 0)  # raises for a FIFO or device, which open() would block on
    if not path.endswith(".gz"):
        with open(path, "rb") as file:
            return file.read()

    try:
        with gzip.open(path, "rb") as file:
            return _read_idx_stream(file, path)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: invalid or truncated gzip data: {exc}") from exc


def _read_idx_stream(file, source):
    """Read one IDX file from the decompressing stream ``file``, header first.

    A small gzip file can expand to far more data than fits in memory, so at
    most the size that the header declares, plus one byte, is decompressed. A
    declared size beyond the memory of the machine raises ValueError before
    any data is read.
    """
    data = file.read(4)
    if len(data) == 4:
        data += file.read(4 * data[3])
    # An invalid or incomplete header raises the same errors as in parse_idx.
    dtype, shape, header_size = _parse_idx_header(data, source)
    n_bytes = dtype.itemsize * math.prod(shape)
    limit = _memory_limit_bytes()
    if limit is not None and n_bytes > limit:
        raise ValueError(
            f"{source}: the IDX header declares shape {shape} of {dtype.newbyteorder('=')}, "
            f"which needs {_format_bytes(n_bytes)}, more than the {_format_bytes(limit)} of "
            f"memory of this machine"
        )
    data += file.read(n_bytes + 1)
    if len(data) > header_size + n_bytes:
        raise ValueError(
            f"{source}: unexpected bytes after the IDX data of shape {shape}: the "
            f"decompressed file is longer than the {header_size + n_bytes} bytes that its "
            f"header declares"
        )
    return data


def _parse_idx_header(data, source):
    """Return (big-endian dtype, shape, header size in bytes) of the IDX file that starts ``data``.

    Raises ValueError for an invalid magic number, type code or number of
    dimensions, and for a header cut short.
    """
    if len(data) < 4:
        raise ValueError(
            f"{source}: truncated IDX header: the file has {len(data)} bytes, "
            f"expected at least 4"
        )
    zero_0, zero_1, type_code, ndim = struct.unpack(">BBBB", data[:4])
    if zero_0 != 0 or zero_1 != 0:
        raise ValueError(
            f"{source}: invalid IDX magic number 0x{data[:4].hex()}: expected the "
            f"first two bytes to be 0"
        )
    if type_code not in IDX_DTYPES:
        codes = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
        raise ValueError(
            f"{source}: invalid IDX type code 0x{type_code:02X}: expected one of {codes}"
        )
    if ndim == 0:
        raise ValueError(f"{source}: invalid IDX header: 0 dimensions")

    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(
            f"{source}: truncated IDX header: {ndim} dimensions need {header_size} "
            f"header bytes but the file has {len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_size])

    dtype = IDX_DTYPES[type_code]
    return dtype, shape, header_size


def parse_idx(data, source="<bytes>"):
    """Parse the bytes of one IDX file and return its array in native byte order.

    An IDX file starts with the magic number: two zero bytes, a type code
    (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64)
    and the number of dimensions. The size of each dimension follows as a
    big-endian uint32, then the data in big-endian row-major order. The data must
    fill the rest of the file exactly.

    Parameters
    ----------
    data : bytes
        The whole file, decompressed.
    source : str, default "<bytes>"
        Name of the data in error messages, such as its path.

    Returns
    -------
    ndarray
        Of the shape in the header and the native-byte-order version of the
        dtype of the type code.

    Raises
    ------
    ValueError
        If the magic number, the type code or the number of dimensions is
        invalid, or the data is shorter or longer than the header declares.

    Examples
    --------
    >>> from nnback.datasets import parse_idx
    >>> header = bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3])   # uint8, shape (2, 3)
    >>> parse_idx(header + bytes(range(6)))
    array([[0, 1, 2],
           [3, 4, 5]], dtype=uint8)
    """
    dtype, shape, header_size = _parse_idx_header(data, source)
    expected_size = header_size + dtype.itemsize * int(np.prod(shape, dtype=object))
    if len(data) < expected_size:
        raise ValueError(
            f"{source}: truncated IDX data: shape {shape} of {dtype.newbyteorder('=')} "
            f"needs {expected_size} bytes but the file has {len(data)}"
        )
    if len(data) > expected_size:
        raise ValueError(
            f"{source}: {len(data) - expected_size} unexpected bytes after the IDX "
            f"data of shape {shape} (expected {expected_size} bytes in total)"
        )

    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def read_idx(path):
    """Read one IDX file (gzip-compressed if the name ends in .gz) into an array.

    Parameters
    ----------
    path : str or os.PathLike
        The IDX file, decompressed with gzip if its name ends in ``.gz``.

    Returns
    -------
    ndarray
        As :func:`parse_idx` returns it.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        For invalid or truncated gzip data, for a gzip-compressed file whose
        header declares more data than the memory of the machine (checked
        before decompressing the data), and as :func:`parse_idx` raises.

    Examples
    --------
    >>> import gzip, os, tempfile
    >>> from nnback.datasets import read_idx
    >>> labels = bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 2, 1])   # uint8, shape (3,)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "labels-idx1-ubyte.gz")
    ...     with gzip.open(path, "wb") as file:
    ...         _ = file.write(labels)
    ...     array = read_idx(path)
    >>> array
    array([7, 2, 1], dtype=uint8)
    """
    path = os.fsdecode(os.fspath(path))
    return parse_idx(_read_bytes(path), source=path)


def _find_mnist_file(folder, name):
    """Return the path of ``name`` or ``name.gz`` in ``folder``."""
    for candidate in (name, name + ".gz"):
        path = os.path.join(folder, candidate)
        # os.stat, unlike os.path.isfile, raises PermissionError for a folder
        # that cannot be searched, so that error names the file instead of
        # being reported as a missing file.
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISREG(mode):
            return path
    raise FileNotFoundError(
        f"{folder}: missing MNIST file {name} (or {name}.gz): expected the files "
        f"{', '.join(MNIST_FILES.values())}"
    )


def load_mnist_idx(folder):
    """Load a :class:`Dataset` from a folder with the four MNIST IDX files.

    Images must be uint8 arrays of shape (n, rows, cols) and labels uint8 arrays
    of shape (n,). Images are flattened to rows * cols features and scaled to
    [0, 1]. When both ``name`` and ``name.gz`` exist, the uncompressed file is read.

    Parameters
    ----------
    folder : str or os.PathLike
        Contains train-images-idx3-ubyte, train-labels-idx1-ubyte,
        t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each optionally
        with a ``.gz`` suffix.

    Returns
    -------
    Dataset

    Raises
    ------
    FileNotFoundError
        If ``folder`` is not a directory or one of the four files is missing.
    ValueError
        If a file is not valid IDX or gzip data, an array does not have the
        expected uint8 dtype and ndim, or the images and labels of a split
        differ in number.

    Examples
    --------
    >>> import os, struct, tempfile
    >>> import numpy as np
    >>> from nnback.datasets import load_mnist_idx
    >>> def write_idx(path, array):
    ...     header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    ...     with open(path, "wb") as file:
    ...         _ = file.write(header + array.tobytes())
    >>> images = np.zeros((5, 28, 28), dtype=np.uint8)
    >>> labels = np.arange(5, dtype=np.uint8)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     write_idx(os.path.join(folder, "train-images-idx3-ubyte"), images)
    ...     write_idx(os.path.join(folder, "train-labels-idx1-ubyte"), labels)
    ...     write_idx(os.path.join(folder, "t10k-images-idx3-ubyte"), images[:2])
    ...     write_idx(os.path.join(folder, "t10k-labels-idx1-ubyte"), labels[:2])
    ...     data = load_mnist_idx(folder)
    >>> data.x_train.shape, data.x_test.shape, data.n_classes
    ((5, 784), (2, 784), 5)
    """
    folder = os.fsdecode(os.fspath(folder))
    if not os.path.isdir(folder):
        if _path_exists(folder):
            raise NotADirectoryError(
                errno.ENOTDIR, "not a directory: expected a folder with the MNIST IDX files", folder
            )
        raise FileNotFoundError(f"{folder}: no such directory")

    arrays = {}
    for key, name in MNIST_FILES.items():
        path = _find_mnist_file(folder, name)
        array = read_idx(path)
        expected_ndim = 3 if key.startswith("x") else 1
        if array.ndim != expected_ndim or array.dtype != np.uint8:
            raise ValueError(
                f"{path}: IDX array of dtype {array.dtype} and shape {array.shape}: "
                f"expected uint8 with {expected_ndim} dimension(s)"
            )
        arrays[key] = array
    return _make_dataset(arrays, folder)


def _path_exists(path):
    """Return whether ``path`` exists, raising what os.stat raises except FileNotFoundError.

    os.path.exists returns False for a path in a folder that cannot be searched
    and for a path with a NUL character, which would be reported as missing.
    """
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    return True


def load_dataset(path):
    """Load a :class:`Dataset` from an .npz file or a folder of MNIST IDX files.

    Parameters
    ----------
    path : str or os.PathLike
        A folder is read with :func:`load_mnist_idx`, and a file whose name
        ends in ``.npz`` with :func:`load_npz`.

    Returns
    -------
    Dataset

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist, and as the chosen loader raises.
    ValueError
        If ``path`` is a file without the ``.npz`` suffix, and as the chosen
        loader raises.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from nnback.datasets import load_dataset
    >>> x = np.eye(3, dtype=np.float32)
    >>> y = np.array([0, 1, 2])
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "data.npz")
    ...     np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    ...     data = load_dataset(path)
    >>> data.n_features, data.n_classes
    (3, 3)
    """
    path = os.fsdecode(os.fspath(path))
    if os.path.isdir(path):
        return load_mnist_idx(path)
    if not _path_exists(path):
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.endswith(".npz"):
        return load_npz(path)
    raise ValueError(
        f"{path}: unsupported data file: expected an .npz file or a folder with the "
        f"MNIST IDX files"
    )


# ---------------------------------------------------------------------------
# Samples to predict
# ---------------------------------------------------------------------------


def load_samples(path):
    """Load samples to predict and their labels, if the data has any.

    Returns ``(x, y)`` where ``y`` is None for unlabelled data. Accepted sources:

    * an .npz file with ``x_test`` and optionally ``y_test`` (so a training
      archive works as is);
    * a folder with the MNIST test files (the label file is optional);
    * an .npy file with the samples only.

    Parameters
    ----------
    path : str or os.PathLike
        An .npz or .npy file, or a folder of MNIST IDX files.

    Returns
    -------
    x : ndarray, shape (n_samples, n_features)
        Samples of dtype float32, converted as the module documentation
        describes.
    y : ndarray of shape (n_samples,) and dtype int64, or None
        The labels, or None for unlabelled data.

    Raises
    ------
    FileNotFoundError
        If ``path`` or a needed MNIST file does not exist.
    ValueError
        If the file type is not supported, or the data is malformed as for
        :func:`load_npz` and :func:`load_mnist_idx`, including an .npy file
        whose samples are NaN or infinite as float32.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from nnback.datasets import load_samples
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "samples.npy")
    ...     np.save(path, np.ones((4, 2, 3)))
    ...     x, y = load_samples(path)
    >>> x.shape, x.dtype, y
    ((4, 6), dtype('float32'), None)
    """
    path = os.fsdecode(os.fspath(path))
    if os.path.isdir(path):
        return _load_mnist_test_samples(path)
    if not _path_exists(path):
        raise FileNotFoundError(f"{path}: no such file or directory")

    if path.endswith(".npz"):
        return _load_npz_samples(path)
    if path.endswith(".npy"):
        return _as_features(_read_npy(path, "features", "the array"), "the array", path), None

    raise ValueError(
        f"{path}: unsupported data file: expected an .npz or .npy file or a folder "
        f"with the MNIST IDX files"
    )


def _load_npz_samples(path):
    with _open_npz(path) as archive:
        members = _npz_members(archive)
        if "x_test" not in members:
            raise ValueError(
                f"{path}: missing array x_test: expected x_test and optionally "
                f"y_test (found: {', '.join(sorted(members)) or 'none'})"
            )
        x = _read_npz_array(archive, members["x_test"], "features", "x_test", path)
        y = None
        if "y_test" in members:
            y = _read_npz_array(archive, members["y_test"], "labels", "y_test", path)

    x = _as_features(x, "x_test", path)
    if y is None:
        return x, None
    y = _as_labels(y, "y_test", path)
    _check_split(x, y, "x_test", "y_test", path)
    return x, y


def _load_mnist_test_samples(folder):
    images_path = _find_mnist_file(folder, MNIST_FILES["x_test"])
    images = read_idx(images_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{images_path}: IDX array of dtype {images.dtype} and shape "
            f"{images.shape}: expected uint8 with 3 dimensions"
        )
    x = _as_features(images, "images", images_path)

    try:
        labels_path = _find_mnist_file(folder, MNIST_FILES["y_test"])
    except FileNotFoundError:
        return x, None
    labels = read_idx(labels_path)
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(
            f"{labels_path}: IDX array of dtype {labels.dtype} and shape "
            f"{labels.shape}: expected uint8 with 1 dimension"
        )
    y = _as_labels(labels, "labels", labels_path)
    _check_split(x, y, "images", "labels", folder)
    return x, y
