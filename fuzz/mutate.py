"""Mutations of byte strings, zip archives and .npy entries for the file-loading targets."""

import io
import json
import struct
import zipfile
import zlib

import numpy as np
from hypothesis import strategies as st

INTERESTING_INTEGERS = (0, 1, 2, 255, 256, 65535, 2**31 - 1, 2**31, 2**32 - 1, 2**63 - 1)


def mutate_bytes(data, raw):
    """Apply one to four byte-level mutations (flip, overwrite, truncate, insert, delete) to ``raw``."""
    raw = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "integer"]))
        position = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if kind == "flip" and raw:
            raw[position] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and raw:
            raw[position] = data.draw(st.integers(0, 255))
        elif kind == "truncate":
            del raw[position:]
        elif kind == "insert":
            raw[position:position] = data.draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del raw[position:position + data.draw(st.integers(1, 16))]
        elif kind == "integer" and len(raw) >= position + 4:
            value = data.draw(st.sampled_from(INTERESTING_INTEGERS)) % 2**32
            order = data.draw(st.sampled_from(["<", ">"]))
            raw[position:position + 4] = struct.pack(order + "I", value)
    return bytes(raw)


def read_zip_entries(raw):
    """Return the (name, bytes) entries of the zip archive ``raw``."""
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def write_zip(entries, compressions):
    """Return a zip archive of ``entries`` with the compression method of each entry."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for (name, content), compression in zip(entries, compressions):
            info = zipfile.ZipInfo(name, date_time=(2000, 1, 1, 0, 0, 0))
            info.compress_type = compression
            archive.writestr(info, content)
    return buffer.getvalue()


def patch_declared_size(raw, name, size):
    """Overwrite the uncompressed size that the zip headers of ``name`` declare.

    Both the local file header (offset 22) and the central directory record
    (offset 24) carry the size. The CRC stays that of the real data.
    """
    raw = bytearray(raw)
    encoded = name.encode("utf-8")
    value = struct.pack("<I", size % 2**32)
    start = 0
    while True:
        local = raw.find(b"PK\x03\x04", start)
        if local < 0:
            break
        name_length = struct.unpack_from("<H", raw, local + 26)[0]
        if bytes(raw[local + 30:local + 30 + name_length]) == encoded:
            raw[local + 22:local + 26] = value
        start = local + 4
    start = 0
    while True:
        central = raw.find(b"PK\x01\x02", start)
        if central < 0:
            break
        name_length = struct.unpack_from("<H", raw, central + 28)[0]
        if bytes(raw[central + 46:central + 46 + name_length]) == encoded:
            raw[central + 24:central + 28] = value
        start = central + 4
    return bytes(raw)


def npy_bytes(array):
    """Return the .npy encoding of ``array``."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def npy_with_header(header, data, version=(1, 0)):
    """Return a .npy file with the header dict text ``header`` followed by ``data``."""
    text = header.encode("latin1")
    prefix_size = 10 if version == (1, 0) else 12
    padding = (-(prefix_size + len(text) + 1)) % 64
    text = text + b" " * padding + b"\n"
    if version == (1, 0):
        length = struct.pack("<H", len(text) % 2**16)
    else:
        length = struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes(version) + length + text + data


def draw_npy_header(data, shape, descr):
    """Draw a .npy header dict text, usually a variation of ``shape`` and ``descr``."""
    if data.draw(st.integers(0, 3)) == 0:
        shape = tuple(data.draw(st.lists(
            st.sampled_from([0, 1, 2, 3, -1, 2**31 - 1, 2**40, 2**62]), max_size=3)))
    if data.draw(st.integers(0, 3)) == 0:
        descr = data.draw(st.sampled_from(
            ["<f4", ">f4", "<f8", ">f8", "<f2", "<i8", "|u1", "|b1", "|O", "<c8", "<U2", "|V4",
             "[('a', '<f4')]", "<M8[s]", "x"]))
    fortran = data.draw(st.sampled_from(["False", "False", "True", "1", "None"]))
    if data.draw(st.integers(0, 9)) == 0:
        return data.draw(st.sampled_from(
            ["{}", "{'descr': '<f4'}", "[1, 2]", "{'descr': '<f4', 'fortran_order': False, "
             "'shape': (1,), 'extra': 1}", "not python", "{'shape': " + "(" * 50 + ")" * 50 + "}"]))
    shape_text = repr(tuple(shape))
    descr_text = descr if descr.startswith("[") else repr(descr)
    return f"{{'descr': {descr_text}, 'fortran_order': {fortran}, 'shape': {shape_text}, }}"


def mutate_json(data, value):
    """Return ``value`` (parsed JSON) with one drawn change somewhere in it."""
    replacements = st.sampled_from(
        [None, True, False, 0, -1, 1, 2**31, 2**31 - 1, 2**64, 1.5, float("nan"), "", "linear",
         "relu", "float16", "float64", [], {}, [1], {"kind": "tanh"}]
    )
    if isinstance(value, dict) and value and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(value)))
        action = data.draw(st.sampled_from(["recurse", "delete", "replace", "add"]))
        changed = dict(value)
        if action == "recurse":
            changed[key] = mutate_json(data, value[key])
        elif action == "delete":
            del changed[key]
        elif action == "replace":
            changed[key] = data.draw(replacements)
        else:
            changed[data.draw(st.sampled_from(["extra", "kind", "bias", "dtype"]))] = data.draw(replacements)
        return changed
    if isinstance(value, list) and value and data.draw(st.booleans()):
        index = data.draw(st.integers(0, len(value) - 1))
        action = data.draw(st.sampled_from(["recurse", "delete", "duplicate", "replace"]))
        changed = list(value)
        if action == "recurse":
            changed[index] = mutate_json(data, value[index])
        elif action == "delete":
            del changed[index]
        elif action == "duplicate":
            changed.insert(index, value[index])
        else:
            changed[index] = data.draw(replacements)
        return changed
    return data.draw(replacements)


def json_bytes(value):
    """Encode ``value`` as JSON bytes, allowing NaN as Python's json module writes it."""
    return json.dumps(value).encode("utf-8")


def write_zip64(entries):
    """Return a zip archive whose entries declare uncompressed sizes of our choosing.

    ``entries`` is a list of (name, content, compression method, declared
    size), with the method ``zipfile.ZIP_STORED`` or ``zipfile.ZIP_DEFLATED``.
    Every entry has a zip64 extra field, so a declared size may exceed 4 GiB.
    The CRC is that of ``content``, so a reader that stops at the end of the
    compressed data finds no error before the declared size runs out.
    """
    output = bytearray()
    central = bytearray()
    for name, content, method, declared in entries:
        # The zip64 field has 64 bits, so larger declarations wrap around.
        declared %= 2**64
        encoded = name.encode("utf-8")
        crc = zlib.crc32(content)
        if method == zipfile.ZIP_DEFLATED:
            compressor = zlib.compressobj(wbits=-15)
            stored = compressor.compress(content) + compressor.flush()
        else:
            stored = content
        offset = len(output)
        local_extra = struct.pack("<HHQQ", 1, 16, declared, len(stored))
        output += struct.pack(
            "<4sHHHHHIIIHH", b"PK\x03\x04", 45, 0, method, 0, 0x2821, crc,
            0xFFFFFFFF, 0xFFFFFFFF, len(encoded), len(local_extra),
        )
        output += encoded + local_extra + stored
        central_extra = struct.pack("<HHQQQ", 1, 24, declared, len(stored), offset)
        central += struct.pack(
            "<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 45, 45, 0, method, 0, 0x2821, crc,
            0xFFFFFFFF, 0xFFFFFFFF, len(encoded), len(central_extra), 0, 0, 0, 0, 0xFFFFFFFF,
        )
        central += encoded + central_extra

    central_offset = len(output)
    output += central
    end64_offset = len(output)
    count = len(entries)
    output += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count,
                          len(central), central_offset)
    output += struct.pack("<4sIQI", b"PK\x06\x07", 0, end64_offset, 1)
    output += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF,
                          0xFFFFFFFF, 0xFFFFFFFF, 0)
    return bytes(output)
