"""Serialise a model piece by piece: the bytes `SerializeToString` gives, without its buffer.

`SerializeToString` encodes a 700 MB model into one buffer that it grows by copying, then copies
the result into a Python `bytes`: three to four times the output's size in fresh pages, which on
a large model costs more in page faults than the encoding itself (measured by `bench.scale`:
at 300k nodes, 597k page faults against 180k here). Protobuf's encoding of a message is the
concatenation of its fields' encodings, so the model and its graph are split into fields and
each node, initializer or function is encoded on its own by protobuf itself; only the tag and
length in front of each piece are written here. Fields come out in protobuf's order (by field
number), so the result is byte for byte what `SerializeToString` writes (tested).
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx
from google.protobuf import unknown_fields
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

__all__ = ["PROTOBUF_LIMIT", "SMALL_GRAPH", "encoded_pieces"]

PROTOBUF_LIMIT = 2**31 - 1
"""Protobuf refuses to parse (or serialise) a message larger than this."""

_SPLIT = frozenset({"onnx.ModelProto", "onnx.GraphProto"})
"""Messages encoded field by field: the ones that hold a large model's bulk."""

_LENGTH_DELIMITED = 2


SMALL_GRAPH = 5_000
"""Below this many main-graph nodes a model is encoded in one call: its buffer is small, and
splitting would cost more calls than the copies it saves."""


def encoded_pieces(model: onnx.ModelProto, small_graph: int = SMALL_GRAPH) -> list[bytes]:
    """`model`'s wire encoding as a list of pieces whose concatenation is `SerializeToString()`;
    one piece when its main graph has fewer than `small_graph` nodes."""
    if len(model.graph.node) < small_graph:
        return [model.SerializeToString()]
    pieces: list[bytes] = []
    _encode(model, pieces)
    return pieces


def _encode(message: Message, pieces: list[bytes]) -> None:
    if message.DESCRIPTOR.full_name not in _SPLIT or len(unknown_fields.UnknownFieldSet(message)):
        pieces.append(message.SerializeToString())  # unknown fields: protobuf knows where they go
        return
    own: list[bytes] = []
    try:
        _encode_fields(message, own)
    except ValueError:  # a string field that is not UTF-8 cannot be set alone: protobuf encodes it all
        own = [message.SerializeToString()]
    pieces.extend(own)


def _encode_fields(message: Message, pieces: list[bytes]) -> None:
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            pieces.append(_single_field(message, field, value))
        elif field.is_repeated:
            _encode_items(field.number, value, pieces)
        elif field.message_type.full_name in _SPLIT:
            inner: list[bytes] = []
            _encode(value, inner)
            pieces.append(_key(field.number) + _varint(sum(map(len, inner))))
            pieces.extend(inner)
        else:
            pieces.append(_single_field(message, field, value))


def _encode_items(number: int, items: Iterable[Message], pieces: list[bytes]) -> None:
    """A repeated message field: each item encoded by protobuf, behind its key and length."""
    key = _key(number)
    append = pieces.append
    for item in items:
        data = item.SerializeToString()
        append(key + _varint(len(data)))
        append(data)


def _single_field(message: Message, field: FieldDescriptor, value: object) -> bytes:
    """One field's encoding, by protobuf: a message of the same type holding only that field."""
    alone = type(message)()
    if field.is_repeated:
        getattr(alone, field.name).extend(value)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(alone, field.name).CopyFrom(value)
    else:
        setattr(alone, field.name, value)
    return alone.SerializeToString()


def _key(number: int) -> bytes:
    return _varint(number << 3 | _LENGTH_DELIMITED)


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint: seven bits a byte, low bits first."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
