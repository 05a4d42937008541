"""Guards that watch what the code under test opens: assert with a guard, not by inspection.

`OpenWatch` sees every open/read of one file by any code, Python or C++ (Linux inotify).
`opened_files` records every file Python opens (the `open` audit event, raised by `open`,
`io.open`, `os.open` and `pathlib`); onnx's C++ loaders do not raise it, which is why
`onnx_loaders_forbidden` makes calling them an error.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["OpenWatch", "onnx_loaders_forbidden", "opened_files"]


class OpenWatch:
    """Kernel-level record of every open/read of one file, by any code (Python or C++), via inotify."""

    IN_ACCESS, IN_OPEN, IN_NONBLOCK = 0x1, 0x20, 0o4000

    def __init__(self, path: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if not hasattr(libc, "inotify_init1"):
            pytest.skip("inotify is Linux-only")
        self.fd = libc.inotify_init1(self.IN_NONBLOCK)
        if self.fd < 0 or libc.inotify_add_watch(self.fd, os.fsencode(path), self.IN_ACCESS | self.IN_OPEN) < 0:
            pytest.skip(f"inotify unavailable: errno {ctypes.get_errno()}")

    def events(self) -> int:
        """How many open/access events happened since the last call."""
        count = 0
        while True:
            try:
                buffer = os.read(self.fd, 65536)
            except BlockingIOError:
                return count
            offset = 0
            while offset < len(buffer):
                name_length = struct.unpack_from("iIII", buffer, offset)[3]
                offset += 16 + name_length
                count += 1

    def close(self) -> None:
        os.close(self.fd)


_recording: list[list[str]] = []


def _audit(event: str, args: tuple) -> None:
    if _recording and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        _recording[-1].append(os.fsdecode(args[0]))


_installed = False


@contextlib.contextmanager
def opened_files() -> Iterator[list[str]]:
    """Every path Python opens inside the block (audit hooks cannot be removed: one hook per
    process records only while a block is active)."""
    global _installed
    if not _installed:
        sys.addaudithook(_audit)
        _installed = True
    paths: list[str] = []
    _recording.append(paths)
    try:
        yield paths
    finally:
        _recording.pop()


@contextlib.contextmanager
def onnx_loaders_forbidden(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Calling any onnx loader that could follow external data (C++ file access) fails the test."""
    import onnx
    import onnx.external_data_helper

    def forbidden(*args, **kwargs):
        raise AssertionError(f"an onnx loader was called with {args!r}")

    for module, name in (
        (onnx, "load"),
        (onnx, "load_model"),
        (onnx, "load_external_data_for_model"),
        (onnx.external_data_helper, "load_external_data_for_model"),
        (onnx.external_data_helper, "load_external_data_for_tensor"),
    ):
        if hasattr(module, name):
            monkeypatch.setattr(module, name, forbidden)
    yield
