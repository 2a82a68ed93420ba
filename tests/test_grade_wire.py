"""The channel between the grader and a submission's process: JSON and ``.npy`` frames, exact
round trips, and nothing the submission writes is ever unpickled or believed unchecked."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest

from npcbam.exercises import wire
from npcbam.exercises.runner import BAD_RETURN, Call, Foreign

EXPLODED = []


def explode():
    EXPLODED.append(True)
    return "exploded"


class Boom:
    """Unpickling this object calls ``explode``: it must never happen."""

    def __reduce__(self):
        return (explode, ())


def round_trip(header: dict, arrays: list) -> tuple[dict, list]:
    return wire.read_message(io.BytesIO(wire.pack(header, arrays)))


def test_values_of_every_kind_come_back_exactly():
    values = (
        np.arange(6.0).reshape(2, 3) / 7,
        np.array(3.5),
        np.array([True, False]),
        np.array([1 + 2j]),
        np.arange(4, dtype=np.int32)[::2],
        np.empty((0, 3)),
        7,
        -(2**70),
        0.1,
        float("inf"),
        True,
        "text",
        None,
        (1, (2, 3)),
        {"w": np.ones(2), "b": np.zeros(1)},
        Foreign("str", "'x'"),
    )
    arrays: list = []
    tree = wire.encode_value(values, arrays)
    header, received = round_trip({"value": tree}, arrays)
    decoded = wire.decode_value(header["value"], received)
    assert len(decoded) == len(values)
    for got, sent in zip(decoded, values):
        if isinstance(sent, np.ndarray):
            assert got.dtype == sent.dtype and got.shape == sent.shape
            assert np.array_equal(got, sent)
        elif isinstance(sent, dict):
            assert list(got) == ["w", "b"] and got["w"].tolist() == [1.0, 1.0]
        else:
            assert got == sent and type(got) is type(sent)
    nan = wire.decode_value(wire.encode_value(float("nan"), []), [None])
    assert nan != nan


def test_a_call_comes_back_as_it_was_sent():
    call = Call(
        returned=(np.ones(2), Foreign("NoneType", "None")),
        failure=BAD_RETURN,
        message="returned a tuple with a None",
        warnings=("RuntimeWarning: overflow encountered in exp",),
        modified=(0, 2),
    )
    arrays: list = []
    header, received = round_trip({"call": wire.encode_call(call, arrays)}, arrays)
    back = wire.decode_call(header["call"], received)
    assert back.returned[0].tolist() == [1.0, 1.0] and back.returned[1] == call.returned[1]
    assert (back.failure, back.message, back.warnings, back.modified) == (
        call.failure,
        call.message,
        call.warnings,
        call.modified,
    )


def test_texts_from_the_submission_are_clipped():
    call = Call(
        failure="exception", message="x" * 10_000, warnings=tuple(f"w{i}" for i in range(99))
    )
    back = wire.decode_call(wire.encode_call(call, []), [None])
    assert len(back.message) == wire.MAX_TEXT and back.message.endswith("...")
    assert len(back.warnings) == wire.MAX_WARNINGS


def test_a_pickled_array_is_refused_and_never_unpickled():
    buffer = io.BytesIO()
    np.save(buffer, np.array([Boom()], dtype=object), allow_pickle=True)
    frames = [b"{}", buffer.getvalue()]
    message = struct.pack(">I", 2) + b"".join(struct.pack(">Q", len(f)) + f for f in frames)
    with pytest.raises(wire.ProtocolError, match=r"not an \.npy array"):
        wire.read_message(io.BytesIO(message))
    assert EXPLODED == []
    with pytest.raises(ValueError):  # and the sending side refuses to write one
        wire.pack({}, [np.array([Boom()], dtype=object)])


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "closed"),
        (struct.pack(">I", 0), "0 frames"),
        (struct.pack(">I", 1) + struct.pack(">Q", 10) + b"{}", "middle of a message"),
        (struct.pack(">I", 1) + struct.pack(">Q", 2**40), "longer than"),
        (struct.pack(">I", 1) + struct.pack(">Q", 3) + b"{x}", "not JSON"),
        (struct.pack(">I", 1) + struct.pack(">Q", 2) + b"[]", "not a JSON object"),
        (
            struct.pack(">I", 2) + struct.pack(">Q", 2) + b"{}" + struct.pack(">Q", 3) + b"abc",
            "npy",
        ),
    ],
)
def test_malformed_messages_are_protocol_errors(data, problem):
    with pytest.raises(wire.ProtocolError, match=problem):
        wire.read_message(io.BytesIO(data))


@pytest.mark.parametrize(
    "tree",
    [
        {"array": 0},  # frame 0 is the JSON
        {"array": 5},
        {"array": True},
        {"int": 1.5},
        {"float": "not hex"},
        {"eval": "__import__('os')"},
        {"tuple": [1]},
        {"dict": [[1, None]]},
        {"foreign": ["only one"]},
        [1, 2],
    ],
)
def test_malformed_values_are_protocol_errors(tree):
    with pytest.raises(wire.ProtocolError):
        wire.decode_value(tree, [None, np.ones(1)])


@pytest.mark.parametrize(
    "change",
    [
        {"failure": "passed"},
        {"message": 3},
        {"warnings": "one"},
        {"modified": [True]},
        {"extra": 1},
    ],
)
def test_malformed_calls_are_protocol_errors(change):
    tree = {**wire.encode_call(Call(returned=None), []), **change}
    with pytest.raises(wire.ProtocolError):
        wire.decode_call(json.loads(json.dumps(tree)), [None])


def test_only_the_documented_kinds_of_value_can_be_sent():
    with pytest.raises(TypeError, match="set"):
        wire.encode_value({1, 2}, [])
