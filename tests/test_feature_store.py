"""The feature store and the atomic writer: weights hashes, completeness, mixed weights, stale temps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from egovlp import features as F
from egovlp.errors import InputError
from egovlp.io import AtomicFile, atomic_write, remove_stale_temps, write_json_atomic


def _state():
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(4, 3, generator=g), "b.bias": torch.randn(5, generator=g)}


def test_weights_hash_changes_when_one_weight_changes():
    state = _state()
    before = F.weights_hash(state)
    assert F.weights_hash(_state()) == before  # deterministic
    state["b.bias"][2] += 1e-6
    assert F.weights_hash(state) != before
    renamed = {"a.weight": _state()["a.weight"], "c.bias": _state()["b.bias"]}
    assert F.weights_hash(renamed) != before  # names count, not only the bytes


def test_weights_hash_of_a_module_equals_its_state_dict():
    layer = torch.nn.Linear(3, 2)
    assert F.weights_hash(layer) == F.weights_hash(layer.state_dict())


def _write(tmp_path, name, weights="w1", config="c1", compat=False):
    paths = F.feature_paths(tmp_path, name, "pt", False)
    meta = {
        "weights_hash": weights,
        "config_hash": config,
        "preset": "nlq",
        "compat": compat,
        "short_side": None,
        "source": f"{name}.mp4",
        "video_start_sec": 0.0,
        "num_rows": 3,
        "row_times": [[0, 1], [1, 2], [2, 3]],
    }
    F.write_clip_features(paths, np.ones((3, 8), np.float32), None, meta)
    return paths, meta


def test_completeness_is_keyed_on_weights_and_sampling(tmp_path):
    paths, meta = _write(tmp_path, "a")
    assert F.clip_complete(paths, 3, 8, None, meta)
    assert not F.clip_complete(paths, 3, 8, None, meta | {"weights_hash": "w2"})
    assert not F.clip_complete(paths, 3, 8, None, meta | {"compat": True})
    assert not F.clip_complete(paths, 3, 8, None, meta | {"short_side": 256})
    paths["features"].write_bytes(b"truncated")
    assert not F.clip_complete(paths, 3, 8, None, meta)


def test_mixed_weights_name_two_files(tmp_path):
    a, _ = _write(tmp_path, "a")
    b, _ = _write(tmp_path, "b", weights="w2")
    pairs = [(p, F.read_sidecar(F.sidecar_path(p))) for p in F.list_feature_files(tmp_path)]
    with pytest.raises(InputError) as err:
        F.check_same_identity(pairs)
    assert str(a["features"]) in str(err.value) and str(b["features"]) in str(err.value)
    assert F.check_same_identity(pairs[:1])["weights_hash"] == "w1"


def test_sidecar_with_wrong_types_is_one_line(tmp_path):
    _write(tmp_path, "a")
    side = tmp_path / "a.json"
    side.write_text(json.dumps({"num_rows": "three"}))
    with pytest.raises(InputError, match=r"a\.json.*num_rows"):
        F.read_sidecar(side)


def test_read_clip_features_without_sidecar_uses_1875_rows_per_second(tmp_path):
    torch.save(torch.zeros(4, 2), tmp_path / "c.pt")
    clip = F.read_clip_features(tmp_path, "c")
    assert clip.features.shape == (4, 2)
    assert clip.row_times[1].tolist() == pytest.approx([1 / 1.875, 2 / 1.875])


def test_atomic_write_gives_umask_mode_and_removes_temp_on_error(tmp_path):
    write_json_atomic({"a": 1}, tmp_path / "x.json")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "y.bin", "wb") as f:
        f.write(b"half")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_stale_temps_of_killed_writers_are_removed(tmp_path):
    # a child opens a temp file the way every writer does and is killed before it commits
    code = (
        "import sys, time; from egovlp.io import AtomicFile; "
        f"f = AtomicFile({str(tmp_path / 'big.h5')!r}); print(f.tmp, flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    tmp = child.stdout.readline().strip()
    live = AtomicFile(tmp_path / "live.bin")  # a write in flight in this process
    assert remove_stale_temps(tmp_path) == 0  # both writers alive: nothing removed
    assert os.path.exists(tmp) and live.tmp.exists()
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert remove_stale_temps(tmp_path) == 1
    assert not os.path.exists(tmp) and live.tmp.exists()
    live.abort()
    assert list(tmp_path.iterdir()) == []
