"""Reading models without their weights and writing results atomically.

Structure is read with the weights left where they are (external data is never loaded). The
output is written to a temporary file in the destination directory and renamed into place, so
a failure never leaves a half-written file and the input is never modified unless `--inplace`
asked for it (and then only by the final rename). When the output replaces the input, its
bytes are also flushed to the disk (`fsync`) before the rename, so not even a power loss can
cost the user the model; any other output can be made again from the input, and is spared
that wait for the disk (a tenth to a third of a large retag, measured by `bench.scale`).

Every file is written by `atomic_write`, and gets the mode an ordinary write would give it: a
new file `0o666 & ~umask`, a replaced one (`--inplace`, an existing `--output`) its old mode and,
where the system permits, its old owner and group.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import onnx
from google.protobuf.message import DecodeError

from tagger.errors import InputError, OutputError, param
from tagger.model.index import may_hold_tensors
from tagger.model.serialize import PROTOBUF_LIMIT, plan_encoding

__all__ = [
    "atomic_write",
    "check_output_path",
    "default_output",
    "external_locations",
    "load_model",
    "load_model_and_locations",
    "save_model",
    "save_text",
    "write_model",
]

_WRITE_BUFFER = 1 << 20
"""The encoded pieces are small (a node each): gathered into writes of this size."""


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Parse an ONNX file's structure; one clear `InputError` for anything unusable."""
    return load_model_and_locations(path)[0]


def load_model_and_locations(path: str | os.PathLike) -> tuple[onnx.ModelProto, set[str]]:
    """`load_model`, plus the external data locations its check found (`external_locations`),
    for callers that need them: one walk over the model instead of two."""
    file = Path(path)
    if not file.exists():
        raise InputError(f"no such file: {file}")
    if file.is_dir():
        raise InputError(f"is a directory, not an ONNX file: {file}")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {file}: {exc.strerror or exc}") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise InputError(f"not an ONNX model (protobuf parse failed: {exc}): {file}") from None
    if not model.HasField("graph") or model.ir_version <= 0:
        raise InputError(f"not an ONNX model (no graph or no IR version): {file}")
    if model.ir_version >= 3 and not model.opset_import:  # the fields after the graph are gone
        raise InputError(f"not a complete ONNX model (no opset_import; truncated?): {file}")
    locations = external_locations(model, data)
    if locations:
        _check_external_data(locations, file.parent.resolve(), file)
    return model, locations


def external_locations(model: onnx.ModelProto, data: bytes | None = None) -> set[str]:
    """Every external data `location` the model refers to, as written in the file. `data`: the
    bytes it was parsed from, which spare the walk over every node where they show that nothing
    else can refer to any (`_initializers_say_all`)."""
    if data is not None and b"location" not in data:
        return set()  # a key the file does not spell is in no entry
    if data is not None:
        found = _initializers_say_all(model, data)
        if found is not None:
            return found
    locations: set[str] = set()
    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    return locations


def _initializers_say_all(model: onnx.ModelProto, data: bytes) -> set[str] | None:
    """The locations of the main graph's initializers, when their `location` entries account
    for every `location` the file's bytes spell (each entry's key is its own 8 bytes of the
    file, so no other tensor can have one); None when the bytes spell more (a tensor attribute,
    a body's or a sparse initializer, or only a name: then every tensor is read)."""
    locations: set[str] = set()
    keys = 0
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                keys += 1
                if tensor.data_location == onnx.TensorProto.EXTERNAL:
                    locations.add(entry.value)
    return locations if keys >= data.count(b"location") else None


def _all_tensors(model: onnx.ModelProto):
    """Every tensor that may hold external data: initializers (sparse ones too) and tensor
    attributes, in the main graph and every body. Attributes are read only on the operators
    that can have tensor or graph attributes (`may_hold_tensors`), which spares a 100k-node
    model a walk over every node's attributes."""
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            if not may_hold_tensors(node.op_type, node.domain):
                continue
            for attribute in node.attribute:
                kind = attribute.type
                if kind == onnx.AttributeProto.TENSOR:
                    yield attribute.t
                elif kind == onnx.AttributeProto.TENSORS:
                    yield from attribute.tensors
                elif kind == onnx.AttributeProto.GRAPH:
                    graphs.append(attribute.g)
                elif kind == onnx.AttributeProto.GRAPHS:
                    graphs.extend(attribute.graphs)


def _check_external_data(locations: set[str], base: Path, file: Path) -> None:
    """Refuse locations outside the model's directory and report missing data files."""
    for location in sorted(locations):
        target = (base / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(base):
            raise InputError(f"unsafe external data location {location!r} (outside the model's directory): {file}")
        if not target.is_file():
            raise InputError(f"external data file {location!r} is missing: {file}")


def check_output_path(path: Path, force: bool = False, what: str = "output") -> None:
    """Refuse, before any work, an output path that cannot or should not be replaced.

    A symbolic link is refused unless `force`, and then the link itself is replaced: the rename
    that puts an output in place never writes through a link. A directory, or a path whose
    directory does not exist, is refused.
    """
    if path.is_symlink():
        if not force:
            link = f"{what} {path} is a symbolic link (to {os.readlink(path)})"
            raise OutputError(f"{link}; use {param('force')} to replace the link")
    elif path.is_dir():
        raise OutputError(f"{what} {path} is a directory")
    if not path.parent.is_dir():
        raise OutputError(f"{what} directory does not exist: {path.parent}")


def default_output(model_path: Path) -> Path:
    """`model.onnx` -> `model.tagged.onnx` beside it."""
    return model_path.with_name(f"{model_path.stem}.tagged{model_path.suffix or '.onnx'}")


def save_model(
    model: onnx.ModelProto,
    source: Path,
    destination: Path,
    durable: bool = False,
    check: Callable[[Path], None] | None = None,
    locations: set[str] | None = None,
    size_hint: int | None = None,
) -> None:
    """Write `model` atomically; make its external data reachable from `destination` (a data
    file copied under the output's name has its new name written into `model`'s entries).
    `durable`: flush to the disk before the rename (for an output that replaces the input).
    `check`: run on the written temporary file before the rename; if it raises, nothing is
    left behind and the destination is untouched. `locations`: the model's external data
    locations if the caller has them (`load_model_and_locations`), sparing a walk over the model.
    `size_hint`: about how many bytes the model encodes to (`plan_encoding`)."""
    directory = destination.parent
    if not directory.is_dir():
        raise OutputError(f"output directory does not exist: {directory}")
    renamed = _share_external_data(external_locations(model) if locations is None else locations, source.parent, destination)
    if renamed:
        _relocate(model, renamed)
    try:
        plan = plan_encoding(model, size_hint=size_hint)
    except ValueError as exc:
        raise OutputError(f"cannot serialise the model for {destination}: {exc}") from None
    if plan.size > PROTOBUF_LIMIT:
        raise OutputError(f"cannot write {destination}: its structure ({plan.size:,} bytes) is over protobuf's 2 GB limit")

    def write(stream: BinaryIO) -> None:
        written = plan.write(stream)
        if written != plan.size:
            raise OutputError(f"cannot write {destination}: {written:,} bytes encoded where {plan.size:,} were planned")

    atomic_write(destination, write, durable, check)


def atomic_write(
    destination: Path,
    write: Callable[[BinaryIO], object],
    durable: bool = False,
    check: Callable[[Path], None] | None = None,
) -> None:
    """Call `write` on a temporary file beside `destination`, then rename it into place.

    The one way every output (models, reports, the shim's export) reaches the disk: a failure
    leaves the destination untouched and no temporary behind; the file gets the mode an ordinary
    write gives (module docstring). `durable`: flush to the disk before the rename. `check`: run
    on the written temporary file before the rename; if it raises, nothing is left behind.
    """
    temporary, handle = _create_temporary(destination)
    try:
        with os.fdopen(handle, "wb", buffering=_WRITE_BUFFER) as stream:
            _keep_attributes(destination, handle)
            write(stream)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        if check is not None:
            check(temporary)
        os.replace(temporary, destination)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write {destination}: {exc.strerror or exc}") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _create_temporary(destination: Path) -> tuple[Path, int]:
    """A new file beside `destination`, created with mode 0o666 so the umask applies as it does
    to any file a program writes (`tempfile.mkstemp` would make it 0600)."""
    while True:
        temporary = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.tmp")
        try:
            return temporary, os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"cannot write {destination}: {exc.strerror or exc}") from None


def _keep_attributes(destination: Path, handle: int) -> None:
    """A file that replaces another keeps its mode, and its owner and group where permitted
    (root may give a file to anyone, a user only to a group it is in)."""
    try:
        before = destination.stat(follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(before.st_mode):
        return  # a symbolic link replaced with --force: the new file is an ordinary new file
    try:
        os.fchown(handle, before.st_uid, before.st_gid)
    except PermissionError:
        pass
    os.fchmod(handle, stat.S_IMODE(before.st_mode))


def _share_external_data(locations: set[str], source_dir: Path, destination: Path) -> dict[str, str]:
    """Beside the input the data file is shared; elsewhere it is copied beside the output.

    Not linked: onnx refuses external data files with several hard links or behind a symlink
    (its guard against link attacks), and a hard link would make the user's original model
    fail that check too. The copy goes through a temporary name, so a failure leaves nothing.

    A file of the same name already beside the output with other bytes is another model's data
    (onnxruntime-genai calls every output's `model.onnx.data`; tagging several into one folder
    meets it): it is left alone, and the copy is named after the output instead,
    `<output name>.data` (`.<k>.data` for a second colliding file). A file of that name belongs
    to the output and is replaced. Returns {location: new location} for the renamed copies.
    """
    if not locations:
        return {}
    source_dir, target_dir = source_dir.resolve(), destination.parent.resolve()
    if source_dir == target_dir:
        return {}
    renamed: dict[str, str] = {}
    for location in sorted(locations):
        source = source_dir / location
        target = target_dir / location
        if target.exists() and not target.is_dir() and _same_data(source, target):
            continue
        if target.exists():
            renamed[location] = _own_data_name(destination.name, set(locations) | set(renamed.values()))
            target = target_dir / renamed[location]
            if target.exists() and not target.is_dir() and _same_data(source, target):
                continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with source.open("rb") as data:
            atomic_write(target, lambda stream, data=data: shutil.copyfileobj(data, stream))
    return renamed


def _same_data(source: Path, target: Path) -> bool:
    return os.path.samefile(source, target) or _same_content(source, target)


def _own_data_name(output_name: str, taken: set[str]) -> str:
    """`<output name>.data`, or `<output name>.<k>.data` when the model uses that name already."""
    name, k = f"{output_name}.data", 1
    while name in taken:
        k += 1
        name = f"{output_name}.{k}.data"
    return name


def _relocate(model: onnx.ModelProto, renamed: dict[str, str]) -> None:
    """Point the model's external data entries at the renamed data files."""
    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location" and entry.value in renamed:
                    entry.value = renamed[entry.value]


def _same_content(a: Path, b: Path, chunk: int = 1 << 20) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if x != y:
                return False
            if not x:
                return True


def save_text(text: str, destination: Path) -> None:
    """Write a report file atomically (same rules as models)."""
    directory = destination.parent
    if not directory.is_dir():
        raise OutputError(f"report directory does not exist: {directory}")
    atomic_write(destination, lambda stream: stream.write(text.encode("utf-8")))


def write_model(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write `model` over `path` atomically (a failure leaves `path` as it was), keeping the mode of
    the file it replaces. The model is written as it is in memory: external data references stay
    as they are, their files neither read nor written (so `path` belongs beside its data file).
    For a model changed in place (`tag_proto`) after `onnx.load(path, load_external_data=False)`."""
    data = model.SerializeToString()
    atomic_write(Path(path), lambda stream: stream.write(data))
