"""--precision in extract: resolved by egovlp.precision, weights cast once (bf16 on the CPU), the
sidecar records what ran, and a folder keeps one precision unless --allow-mixed-precision."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import write_nlq

from egovlp.cli import run
from egovlp.errors import InputError
from egovlp.precision import resolve_precision
from extract.cli import parse_args
from extract.manifest import read_manifest
from extract.outputs import check_folder_precision, recorded_precisions
from extract.stage import ModelSpec, load_extract_model


def _dispatch(*args) -> int:
    """`egovlp extract ...` through the dispatcher (InputError -> one line, exit 2)."""
    try:
        return run(["extract", *map(str, args), "--no-progress", "--workers", "0"])
    except SystemExit as done:
        return int(done.code)


def _statuses(out: Path) -> dict[str, str]:
    return {r["name"]: r["status"] for r in read_manifest(out / "manifest.parquet")}


@pytest.fixture
def one_video(tmp_path, index_videos) -> Path:
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(index_videos / "vid25.mp4", folder / "b.mp4")
    return folder


def test_bf16_is_cast_once_and_keeps_the_weights_identity(micro_model_dir):
    fp32 = load_extract_model(ModelSpec(str(micro_model_dir)))
    bf16 = load_extract_model(ModelSpec(str(micro_model_dir), precision="bf16"))
    assert (fp32.precision, fp32.dtype) == ("fp32", torch.float32)
    assert (bf16.precision, bf16.dtype) == ("bf16", torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in bf16.video_model.parameters())
    # one checkpoint, one identity: the hash names the weights, not their cast
    assert bf16._egovlp_weights_hash == fp32._egovlp_weights_hash
    with pytest.raises(InputError, match="fp16"):
        load_extract_model(ModelSpec(str(micro_model_dir), precision="fp16"))  # CUDA only


def test_bf16_on_cpu_end_to_end_and_one_precision_per_folder(tmp_path, one_video, micro_model_dir, capsys):
    base = ("--model", micro_model_dir, "--preset", "nlq", "--input", one_video)
    fp32_out, out = tmp_path / "fp32", tmp_path / "out"
    assert _dispatch(*base, "--out", fp32_out, "--precision", "fp32") == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "fp32"
    assert _dispatch(*base, "--out", out, "--precision", "bf16") == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "bf16"
    meta = json.loads((out / "b.json").read_text())
    assert meta["precision"] == "bf16"
    assert meta["weights_hash"] == json.loads((fp32_out / "b.json").read_text())["weights_hash"]
    bf16 = torch.load(out / "b.pt", weights_only=True)
    fp32 = torch.load(fp32_out / "b.pt", weights_only=True)
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    assert not torch.equal(bf16, fp32)  # it did run in bf16
    cos = torch.nn.functional.cosine_similarity(bf16, fp32, dim=1)
    assert cos.min() > 0.99, cos

    # same precision again: complete, skipped
    assert _dispatch(*base, "--out", out, "--precision", "bf16") == 0
    assert _statuses(out) == {"b": "skipped"}
    capsys.readouterr()
    # another precision into the folder: one line naming both, nothing written
    before = {f: (out / f).read_bytes() for f in ("b.json", "extract_options.yaml")}
    assert _dispatch(*base, "--out", out, "--precision", "fp32") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "bf16" in err and "this run is fp32" in err and "--allow-mixed-precision" in err
    assert {f: (out / f).read_bytes() for f in before} == before  # refused before writing anything
    # allowed: this run's outputs are recomputed in its precision (as for other weights)
    assert _dispatch(*base, "--out", out, "--precision", "fp32", "--allow-mixed-precision") == 0
    assert _statuses(out) == {"b": "ok"}
    assert json.loads((out / "b.json").read_text())["precision"] == "fp32"
    assert torch.equal(torch.load(out / "b.pt", weights_only=True), fp32)


def test_text_preset_records_and_keeps_its_precision(tmp_path, micro_model_dir, capsys):
    nlq = write_nlq(
        tmp_path / "nlq.json",
        [{"video_uid": "v", "clip_uid": "c", "video_start_sec": 0, "video_end_sec": 4}],
    )
    out = tmp_path / "text"
    base = ("--model", micro_model_dir, "--preset", "text", "--input", nlq, "--out", out)
    assert _dispatch(*base, "--precision", "bf16") == 0
    assert json.loads((out / "text_cls.json").read_text())["precision"] == "bf16"
    assert recorded_precisions(out) == {"text_cls": "bf16"}
    capsys.readouterr()
    assert _dispatch(*base, "--precision", "fp32") == 2
    assert "--allow-mixed-precision" in capsys.readouterr().err
    assert _dispatch(*base, "--precision", "fp32", "--allow-mixed-precision") == 0
    assert json.loads((out / "text_cls.json").read_text())["precision"] == "fp32"  # redone


def test_folder_check_ignores_foreign_files_and_unrecorded_sidecars(tmp_path):
    (tmp_path / "notes.json").write_text('{"hello": 1}')  # not an extract sidecar
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "old.json").write_text('{"weights_hash": "w"}')  # before precisions were recorded
    (tmp_path / "new.json").write_text('{"weights_hash": "w", "precision": "fp32"}')
    recorded = recorded_precisions(tmp_path)
    assert recorded == {"old": None, "new": "fp32"}
    check_folder_precision(tmp_path, "fp32", recorded)
    with pytest.raises(InputError, match=r"holds features extracted in fp32 \(new and 0 more\)"):
        check_folder_precision(tmp_path, "bf16", recorded)
    check_folder_precision(tmp_path, "bf16", recorded, allow_mixed=True)


def test_bad_precision_is_one_line(tmp_path, one_video, micro_model_dir, capsys):
    base = ("--model", micro_model_dir, "--preset", "nlq", "--input", one_video, "--out", tmp_path / "o")
    assert _dispatch(*base, "--precision", "fp8") == 2
    assert "--precision 'fp8': choose one of auto, fp32, bf16, fp16" in capsys.readouterr().err
    assert _dispatch(*base, "--precision", "fp16") == 2  # float16 is for CUDA only
    assert "fp16" in capsys.readouterr().err


def test_defaults_take_a_packaged_name_or_a_path(tmp_path):
    args = parse_args(["--defaults", "nlq-gpu"])
    assert (args.preset, args.batch_size, args.precision) == ("nlq", 64, "bf16")
    assert parse_args(["--defaults", "nlq-ray"]).engine == "ray"
    mine = tmp_path / "mine.yaml"
    mine.write_text("precision: fp32\nbatch_size: 4\n")
    from_file = parse_args(["--defaults", str(mine)])
    assert (from_file.precision, from_file.batch_size) == ("fp32", 4)
    assert parse_args(["--defaults", "nlq-gpu", "--precision", "fp32"]).precision == "fp32"  # the flag wins
    with pytest.raises(InputError, match="nlq-gpu"):  # an unknown name lists the packaged ones
        parse_args(["--defaults", "nlq-tpu"])


def test_ray_replicas_precision_resolves_locally_when_it_can():
    from extract.ray_engine import cluster_precision

    assert cluster_precision("auto", "cpu") == resolve_precision("auto", "cpu").name
    assert cluster_precision("bf16", "cpu") == "bf16"
    assert cluster_precision("fp16", "cuda") == "fp16"  # a named precision needs no GPU to resolve
    with pytest.raises(InputError, match="fp16"):
        cluster_precision("fp16", "cpu")
