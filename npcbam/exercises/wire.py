r"""How the grader and a submission's process talk: length-prefixed frames, JSON and ``.npy``.

The submission is untrusted, so nothing that crosses between the two processes is ever
unpickled. A *message* is a count followed by that many frames, each a length and its bytes::

    message := K (4 bytes, big-endian)  frame_0 ... frame_{K-1}
    frame   := L (8 bytes, big-endian)  L bytes

Frame 0 is a JSON object (UTF-8); frames 1 to K-1 are arrays in NumPy's ``.npy`` format
(``np.save`` / ``np.load`` with ``allow_pickle=False``, so an object array cannot travel).
Inside the JSON a value is encoded as a small tree (:func:`encode_value`):

=====================  =============================================
Python value           JSON
=====================  =============================================
ndarray                ``{"array": i}`` (frame ``i``)
int, float, bool, str  ``{"int": 3}``, ``{"float": "0x1.8p+1"}`` (exact hex), ...
None                   ``null``
tuple (or list)        ``{"tuple": [v, ...]}``
dict of str            ``{"dict": [[key, v], ...]}`` (order kept)
:class:`Foreign`       ``{"foreign": [type name, text]}``
=====================  =============================================

A :class:`~npcbam.exercises.runner.Call` is ``{"returned": v, "failure": ..., "message": ...,
"warnings": [...], "modified": [...]}``. Decoding checks every field and raises
:class:`ProtocolError` for anything else, so a process that writes garbage on the channel is
recognised as broken rather than believed.
"""

from __future__ import annotations

import io
import json
import struct

import numpy as np

from npcbam.exercises.runner import FAILURES, Call, Foreign

# Upper bounds that keep a broken or hostile process from making the grader allocate without end.
MAX_FRAMES = 100_000
MAX_MESSAGE_BYTES = 1 << 30
# The longest text kept from a submission (an exception message, a warning).
MAX_TEXT = 300
MAX_WARNINGS = 20


class ProtocolError(Exception):
    """A message that does not follow the format above (or a channel closed mid-message)."""


class ChannelClosed(ProtocolError):
    """The channel ended (end of file) before the first byte of a message."""


# --- values -------------------------------------------------------------------------------


def encode_value(value, arrays: list[np.ndarray]) -> object:
    """The JSON tree of ``value``; its arrays are appended to ``arrays`` (by reference)."""
    if isinstance(value, np.ndarray):
        arrays.append(value)
        return {"array": len(arrays)}  # frame index: frame 0 is the JSON
    if isinstance(value, Foreign):
        return {"foreign": [value.type_name, value.text]}
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return {"bool": bool(value)}
    if isinstance(value, (int, np.integer)):
        return {"int": int(value)}
    if isinstance(value, (float, np.floating)):
        return {"float": float(value).hex()}
    if isinstance(value, str):
        return {"str": value}
    if isinstance(value, (tuple, list)):
        return {"tuple": [encode_value(item, arrays) for item in value]}
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {"dict": [[key, encode_value(item, arrays)] for key, item in value.items()]}
    raise TypeError(f"cannot send a value of type {type(value).__name__}")


def decode_value(tree, arrays: list[np.ndarray]) -> object:
    """The inverse of :func:`encode_value`; ``arrays[i]`` is the array of frame ``i``."""
    if tree is None:
        return None
    if not isinstance(tree, dict) or len(tree) != 1:
        raise ProtocolError(f"not an encoded value: {_clip(repr(tree))}")
    ((kind, content),) = tree.items()
    if kind == "array" and type(content) is int and 1 <= content < len(arrays):
        return arrays[content]
    if kind == "foreign" and _is_list_of(content, str) and len(content) == 2:
        return Foreign(_clip(content[0]), _clip(content[1]))
    if kind == "bool" and isinstance(content, bool):
        return content
    if kind == "int" and type(content) is int:
        return content
    if kind == "float" and isinstance(content, str):
        try:
            return float.fromhex(content)
        except ValueError as error:
            raise ProtocolError(f"not a float: {_clip(content)}") from error
    if kind == "str" and isinstance(content, str):
        return content
    if kind == "tuple" and isinstance(content, list):
        return tuple(decode_value(item, arrays) for item in content)
    if kind == "dict" and isinstance(content, list):
        pairs = []
        for pair in content:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                raise ProtocolError(f"not a dict entry: {_clip(repr(pair))}")
            pairs.append((pair[0], decode_value(pair[1], arrays)))
        return dict(pairs)
    raise ProtocolError(f"not an encoded value: {_clip(repr(tree))}")


# --- calls --------------------------------------------------------------------------------


def encode_call(call: Call, arrays: list[np.ndarray]) -> dict:
    """The JSON object of a :class:`Call` (texts clipped to ``MAX_TEXT`` characters)."""
    return {
        "returned": encode_value(call.returned, arrays),
        "failure": call.failure,
        "message": _clip(call.message),
        "warnings": [_clip(text) for text in call.warnings[:MAX_WARNINGS]],
        "modified": [int(i) for i in call.modified],
    }


def decode_call(tree, arrays: list[np.ndarray]) -> Call:
    """The :class:`Call` of a JSON object written by :func:`encode_call`."""
    if not isinstance(tree, dict) or set(tree) != {
        "returned",
        "failure",
        "message",
        "warnings",
        "modified",
    }:
        raise ProtocolError(f"not an encoded call: {_clip(repr(tree))}")
    failure = tree["failure"]
    if failure is not None and failure not in FAILURES:
        raise ProtocolError(f"unknown failure kind: {_clip(repr(failure))}")
    if not isinstance(tree["message"], str):
        raise ProtocolError("a call's message is not a string")
    if not _is_list_of(tree["warnings"], str):
        raise ProtocolError("a call's warnings are not strings")
    if not _is_list_of(tree["modified"], int):
        raise ProtocolError("a call's modified arguments are not integers")
    returned = decode_value(tree["returned"], arrays)
    return Call(
        returned=returned,
        failure=failure,
        message=_clip(tree["message"]),
        warnings=tuple(_clip(text) for text in tree["warnings"][:MAX_WARNINGS]),
        modified=tuple(tree["modified"]),
    )


# --- messages -----------------------------------------------------------------------------


def pack(header: dict, arrays: list[np.ndarray]) -> bytes:
    """One message: the JSON ``header`` (frame 0) and each array as ``.npy`` (frames 1...)."""
    frames = [json.dumps(header, allow_nan=False).encode("utf-8")]
    for array in arrays:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        frames.append(buffer.getvalue())
    parts = [struct.pack(">I", len(frames))]
    for frame in frames:
        parts.append(struct.pack(">Q", len(frame)))
        parts.append(frame)
    return b"".join(parts)


def read_message(stream) -> tuple[dict, list[np.ndarray]]:
    """Read one message from a binary ``stream``: its JSON object and its arrays.

    Returns
    -------
    header : dict
    arrays : list of ndarray
        ``arrays[i]`` is frame ``i``'s array; ``arrays[0]`` is None (frame 0 is the JSON).

    Raises
    ------
    ChannelClosed
        The stream ended before the message began.
    ProtocolError
        A truncated or malformed message.
    """
    head = stream.read(4)
    if not head:
        raise ChannelClosed("the channel is closed")
    (count,) = struct.unpack(">I", _exactly(head, 4))
    if not 1 <= count <= MAX_FRAMES:
        raise ProtocolError(f"a message of {count} frames")
    total = 0
    frames = []
    for _ in range(count):
        (length,) = struct.unpack(">Q", _exactly(stream.read(8), 8))
        total += length
        if total > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"a message longer than {MAX_MESSAGE_BYTES} bytes")
        frames.append(_exactly(stream.read(length), length))
    try:
        header = json.loads(frames[0].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ProtocolError(f"frame 0 is not JSON: {error}") from error
    if not isinstance(header, dict):
        raise ProtocolError("frame 0 is not a JSON object")
    arrays: list = [None]
    for frame in frames[1:]:
        try:
            array = np.load(io.BytesIO(frame), allow_pickle=False)
        except Exception as error:  # any malformed .npy: say so, never trust it
            raise ProtocolError(f"a frame is not an .npy array: {error}") from error
        if not isinstance(array, np.ndarray):
            raise ProtocolError("a frame is not a single .npy array")
        arrays.append(array)
    return header, arrays


def _exactly(data: bytes, length: int) -> bytes:
    if len(data) != length:
        raise ProtocolError("the channel closed in the middle of a message")
    return data


def _is_list_of(value, kind: type) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, kind) and not (kind is int and isinstance(item, bool)) for item in value
    )


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
