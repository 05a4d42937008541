"""Write a model's wire encoding as it is made: the bytes `SerializeToString` gives, no buffer.

`SerializeToString` encodes a 700 MB model into one buffer that it grows by copying, then copies
the result into a Python `bytes`: three to four times the output's size in fresh pages, which on
a large model costs more in page faults than the encoding itself (measured by `bench.scale`:
at 300k nodes, 597k page faults for the output alone). Protobuf's encoding of a message is the
concatenation of its fields' encodings, so the model and its graph are split into fields, and
each node, initializer or function is encoded on its own by protobuf, while it is written; its
size (`ByteSize`, no allocation) is known beforehand for the length in front of it and of the
graph. Fields come out in protobuf's order (by field number), so the file holds byte for byte
what `SerializeToString` writes (tested).
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

import onnx
from google.protobuf import unknown_fields
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

__all__ = ["PROTOBUF_LIMIT", "SMALL_GRAPH", "EncodingPlan", "plan_encoding"]

PROTOBUF_LIMIT = 2**31 - 1
"""Protobuf refuses to parse (or serialise) a message larger than this."""

SMALL_GRAPH = 64 << 20
"""Below this many bytes (the input file's size, `size_hint`) a model is encoded in one call, as
`onnx.save` does; its fresh pages (about twice the output: upb's growing buffer, then the Python
copy) come after the analysis is freed, below a retag's peak or little above it. Pieces encode
each node twice (`ByteSize`, then the write) and cost no pages (measured on a 2-core machine,
untagged inputs encoded and written: lean graph of 100k nodes, 16 MB, one call 0.06 s, pieces
0.17 s; 300k, 49 MB, 0.20 s and 0.50 s; the retag's peak RSS with one call: 100k +31 MB of 278,
300k +10 MB of 692; a TorchScript BERT of 100k nodes +43 MB of 264)."""

_SPLIT = frozenset({"onnx.ModelProto", "onnx.GraphProto"})
"""Messages encoded field by field: the ones that hold a large model's bulk."""

_LENGTH_DELIMITED = 2


_BATCH = 4096
"""Items of a repeated field encoded, then written, together (fewer calls, small buffers)."""


@dataclass
class RepeatedMessages:
    """A repeated message field, each item behind its key and length, encoded by protobuf when
    written. Only the items' sizes are kept (8 bytes each): holding a Python wrapper per item
    would cost about 160 bytes a node with upb, 49 MB at 300k nodes."""

    key: bytes
    items: Sequence[Message]
    sizes: array

    @property
    def size(self) -> int:
        prefix = _Prefixes(self.key)
        return sum(map(len, map(prefix.__getitem__, self.sizes))) + sum(self.sizes)

    def write(self, write: Callable[[bytes], int]) -> int:
        prefix = _Prefixes(self.key)
        encoded = map(type(self.items[0]).SerializeToString, self.items) if self.items else iter(())
        pieces = itertools.chain.from_iterable(zip(map(prefix.__getitem__, self.sizes), encoded, strict=True))
        written = 0
        while batch := b"".join(itertools.islice(pieces, 2 * _BATCH)):
            written += write(batch)
        return written


class _Prefixes(dict):
    """A field's key and an item's length, by length (items of a field repeat a few lengths)."""

    def __init__(self, key: bytes) -> None:
        super().__init__()
        self.key = key

    def __missing__(self, size: int) -> bytes:
        found = self[size] = self.key + _varint(size)
        return found


@dataclass
class EncodingPlan:
    """A model's encoding in order: bytes already encoded, and repeated message fields protobuf
    encodes item by item when they are written. `size` is the total in bytes; `messages` how
    many messages are encoded on their own."""

    pieces: list[bytes | RepeatedMessages] = field(default_factory=list)
    size: int = 0
    messages: int = 0

    def add_bytes(self, data: bytes) -> None:
        self.pieces.append(data)
        self.size += len(data)

    def add_repeated(self, repeated: RepeatedMessages) -> None:
        self.pieces.append(repeated)
        self.size += repeated.size
        self.messages += len(repeated.sizes)

    def extend(self, other: EncodingPlan) -> None:
        self.pieces.extend(other.pieces)
        self.size += other.size
        self.messages += other.messages

    def write(self, stream: BinaryIO) -> int:
        """Write every piece to `stream`; the number of bytes written."""
        write = stream.write
        written = 0
        for piece in self.pieces:
            written += write(piece) if piece.__class__ is bytes else piece.write(write)
        return written


def plan_encoding(model: onnx.ModelProto, small_graph: int | None = None, size_hint: int | None = None) -> EncodingPlan:
    """How to write `model` piece by piece; one piece when it is smaller than `small_graph`
    bytes (default `SMALL_GRAPH`). `size_hint`: its size if the caller knows it (the file it was
    read from): with upb, `ByteSize()` encodes the whole model to count its bytes."""
    limit = SMALL_GRAPH if small_graph is None else small_graph
    plan = EncodingPlan()
    if limit and (size_hint if size_hint is not None else model.ByteSize()) < limit:
        plan.add_bytes(model.SerializeToString())
    else:
        _plan(model, plan)
    return plan


def _plan(message: Message, plan: EncodingPlan) -> None:
    if message.DESCRIPTOR.full_name not in _SPLIT or len(unknown_fields.UnknownFieldSet(message)):
        plan.add_bytes(message.SerializeToString())  # unknown fields: protobuf knows where they go
        return
    own = EncodingPlan()
    try:
        _plan_fields(message, own)
    except ValueError:  # a string field that is not UTF-8 cannot be set alone: protobuf encodes it all
        own = EncodingPlan()
        own.add_bytes(message.SerializeToString())
    plan.extend(own)


def _plan_fields(message: Message, plan: EncodingPlan) -> None:
    for descriptor, value in message.ListFields():
        if descriptor.type != FieldDescriptor.TYPE_MESSAGE:
            plan.add_bytes(_single_field(message, descriptor, value))
        elif descriptor.is_repeated:
            _plan_items(descriptor.number, value, plan)
        elif descriptor.message_type.full_name in _SPLIT:
            inner = EncodingPlan()
            _plan(value, inner)
            plan.add_bytes(_key(descriptor.number) + _varint(inner.size))
            plan.extend(inner)
        else:
            plan.add_bytes(_single_field(message, descriptor, value))


def _plan_items(number: int, items: Sequence[Message], plan: EncodingPlan) -> None:
    """A repeated message field: each item behind its key and length, encoded when written."""
    sizes = array("Q", map(type(items[0]).ByteSize, items) if items else ())
    plan.add_repeated(RepeatedMessages(_key(number), items, sizes))


def _single_field(message: Message, descriptor: FieldDescriptor, value: object) -> bytes:
    """One field's encoding, by protobuf: a message of the same type holding only that field."""
    alone = type(message)()
    if descriptor.is_repeated:
        getattr(alone, descriptor.name).extend(value)
    elif descriptor.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(alone, descriptor.name).CopyFrom(value)
    else:
        setattr(alone, descriptor.name, value)
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
