"""Atomic replacement of files, and reads that cannot block on a FIFO.

:func:`atomic_write` writes new content to a temporary file in the target's
directory and renames it over the target. A process that opens the target
reads either the old file or the complete new one, never a partial write.
:func:`read_regular_file_start` reads the first bytes of a file that must be a
regular file.
"""

import codecs
import errno
import os
import secrets
import stat

__all__ = ["atomic_write", "read_regular_file_start"]

# Temporary files are named ".nnback-<16 hex digits>.tmp": short enough for any
# target name that the file system accepts, and hidden from a plain `ls`.
TEMPORARY_PREFIX = ".nnback-"
TEMPORARY_SUFFIX = ".tmp"

def atomic_write(path, write_function, *, binary=True, encoding="utf-8", newline=None):
    """Write a file with ``write_function`` and move it over ``path`` in one rename.

    Steps:

    1. ``path`` is resolved with ``os.path.realpath``, so that a symbolic link
       keeps pointing to the file that it names and that file is replaced, as
       writing through the link with ``open`` would do.
    2. A new file ``.nnback-<random hex>.tmp`` is created in the directory of
       the resolved target and opened. ``write_function(file)`` is called once
       and must write the whole content without closing ``file``.
    3. The file is flushed and synced to disk with ``os.fsync`` and given the
       permission bits (``mode & 0o777``) of the existing target. A new target
       gets the mode that ``open`` would create it with (0o666 minus the umask).
    4. ``os.replace`` renames the temporary file over the target, and the
       directory is synced where the operating system allows it.

    If any step raises, including ``write_function``, the temporary file is
    removed, the target is left unchanged and the exception propagates.

    Parameters
    ----------
    path : str, bytes or os.PathLike
        The file to create or replace.
    write_function : callable
        Called as ``write_function(file)``. Its return value is returned.
    binary : bool, default True
        Open the temporary file in binary mode, so ``write_function`` writes
        bytes. With False it is opened in text mode with ``encoding`` and
        ``newline``, which mean what the ``open`` arguments of the same names
        mean.

    Returns
    -------
    The return value of ``write_function``.

    Raises
    ------
    ValueError
        If ``path`` is empty, or names an existing file that is not a regular
        file (a device, FIFO or socket), which a rename would replace.
    IsADirectoryError
        If ``path`` names a directory.
    FileNotFoundError
        If the directory of ``path`` does not exist.
    LookupError
        In text mode, for an unknown ``encoding``, before any file is created.
    """
    path = os.fsdecode(os.fspath(path))
    if not path:
        raise ValueError("path is empty")

    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: directory {directory!r} does not exist")
    mode = _existing_mode(path)
    if not binary:
        _check_text_options(encoding, newline)

    temporary_path, file = _create_temporary_file(directory, binary, encoding, newline)
    try:
        with file:
            result = write_function(file)
            file.flush()
            os.fsync(file.fileno())
        if mode is not None:
            os.chmod(temporary_path, mode)
        os.replace(temporary_path, target)
    except BaseException:
        try:
            os.unlink(temporary_path)
        except FileNotFoundError:
            pass
        raise
    _sync_directory(directory)
    return result


def _existing_mode(path):
    """Return the permission bits of the regular file at ``path``, or None if there is none.

    ``os.stat`` follows symbolic links, so a link to a device or FIFO (such as
    /dev/stdout) is seen as what it points to. A dangling link counts as no file.
    """
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(status.st_mode):
        raise IsADirectoryError(f"cannot write {path!r}: it is a directory")
    if not stat.S_ISREG(status.st_mode):
        raise ValueError(
            f"cannot write {path!r}: it exists and is not a regular file, and an atomic "
            f"write would replace it with one"
        )
    return status.st_mode & 0o777


def _check_text_options(encoding, newline):
    """Raise before any file is created if ``open`` would reject ``encoding`` or ``newline``."""
    if encoding is not None:
        # Raises LookupError for an unknown encoding.
        codecs.lookup(encoding)
    if newline not in (None, "", "\n", "\r", "\r\n"):
        raise ValueError(f"newline must be None, '', '\\n', '\\r' or '\\r\\n', got {newline!r}")


def _create_temporary_file(directory, binary, encoding, newline):
    """Create a new file in ``directory`` and return (path, file object open for writing).

    Exclusive creation ("x" mode) never opens an existing file. The mode is
    0o666 minus the process umask, as ``open`` would create the target itself.
    """
    while True:
        name = f"{TEMPORARY_PREFIX}{secrets.token_hex(8)}{TEMPORARY_SUFFIX}"
        path = os.path.join(directory, name)
        try:
            if binary:
                return path, open(path, "xb")
            return path, open(path, "x", encoding=encoding, newline=newline)
        except FileExistsError:
            continue


def _sync_directory(directory):
    """Flush the directory entry of a renamed file to disk, where the OS supports it."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        # Some file systems and platforms cannot fsync a directory. The file
        # data itself was synced before the rename.
        pass
    finally:
        os.close(descriptor)


def read_regular_file_start(path, size, not_regular_message):
    """Return the first ``size`` bytes of the file at ``path``, which must be a regular file.

    The file is opened without blocking, so that a FIFO without a writer raises
    ``ValueError(not_regular_message)`` at once instead of blocking the caller,
    as do sockets and devices. A directory raises IsADirectoryError, as
    ``open`` does.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    descriptor = os.open(path, flags)
    try:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(mode):
            raise ValueError(not_regular_message)
        return os.read(descriptor, size)
    finally:
        os.close(descriptor)
