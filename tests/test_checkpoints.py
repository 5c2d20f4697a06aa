"""Checkpoints are loaded without running code: a malicious pickle is refused and runs nothing."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from wxbench.errors import DataError
from wxbench.results import read_checkpoint, write_checkpoint


class _Payload:
    """Pickles as a call to Path.touch: unpickling it with weights_only=False would create the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "seed0.pt"
    torch.save({"module": {"w": torch.ones(2)}, "extra": _Payload(marker)}, path)
    with pytest.raises(DataError, match=r"checkpoint .*seed0\.pt: refused, it holds objects other than tensors"):
        read_checkpoint(path)
    assert not marker.exists()
    # the check can fail the other way too: the same pickle, loaded unsafely, does run the payload
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_wxbench_checkpoint_round_trips(tmp_path):
    state = {"module": {"w": torch.arange(3.0)}, "tf_generator": torch.Generator().get_state(),
             "scale": None, "names": ["a", "b"], "alpha": 1.0}
    path = tmp_path / "seed0.pt"
    write_checkpoint(path, state)
    loaded = read_checkpoint(path)
    assert torch.equal(loaded["module"]["w"], state["module"]["w"]) and loaded["names"] == ["a", "b"]
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    assert read_checkpoint(buffer)["alpha"] == 1.0
