"""A table of bad inputs across every command: each ends in exit 2 and one stderr line naming it.

Most cases call `egovlp.cli.run(argv)` in this process (`tests.helpers.run_egovlp`: stdout and
stderr captured at the descriptor level, a fresh process's warning filters, and the process state a
command may change put back afterwards), which asserts what a user of `python -m egovlp` meets
without paying an interpreter start and the torch import per case. `SUBPROCESS` cases still run
`python -m egovlp ...` with CUDA hidden, in threads beside the in-process ones:

- `serve-*`: if the check under test broke, the server would start and serve for ever; a
  subprocess can be killed at a timeout, this process could not;
- `*-device-cuda`: the case is "`--device cuda` on a machine without a GPU"; a subprocess makes
  that true everywhere (`CUDA_VISIBLE_DEVICES=""`), an in-process run on a GPU machine would
  accept the device.

The fixtures (a micro model, a tiny synthetic world, shards, features, an index) come from
`tests.helpers` (built once per test process, shared with the other modules) plus the broken
copies made here once for the module. "Not writable" paths hold for root too: a path under a
regular file, or a folder under /proc.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.helpers import (
    CliRun,
    extracted_features,
    micro_model_files,
    run_egovlp,
    run_egovlp_subprocess,
    synthetic_world,
    world_shards,
    write_json,
)

TIMEOUT_S = 180.0
SERVE_TIMEOUT_S = 120.0  # a server that starts anyway is killed then (and the case fails): room
# for a loaded machine, where importing the service alone took over 45 s
PROGRESS_BAR = re.compile(r"\d+%\|.*\| \d+/")  # a tqdm bar drawn on stderr


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # after `egovlp`; "{name}" placeholders are fixture paths
    names: str  # the error line must contain this (formatted like argv)

    @property
    def needs_subprocess(self) -> bool:
        return self.argv[0] == "serve" or self.id.endswith("-device-cuda")


def case(id_: str, cmd: str, names: str) -> Case:
    return Case(id_, tuple(cmd.split()), names)


# fmt: off
CASES: list[Case] = [
    # ---- convert / embed
    case("convert-out-is-file", "convert {pth} {afile} --config {micro_yaml}", "{afile}"),
    case("convert-out-under-file", "convert {pth} {afile}/out --config {micro_yaml}", "{afile}"),
    case("convert-random-bytes", "convert {rand} {tmp}/conv-rand", "{rand}"),
    case("convert-config-scalar", "convert {pth} {tmp}/conv-scalar --config {scalar_yaml}", "{scalar_yaml}"),
    case("embed-frames-0", "embed --model {model} --video {video} --frames 0", "--frames"),
    case("embed-device-bogus", "embed --model {model} --text hi --device bogus", "bogus"),
    case("embed-device-cuda", "embed --model {model} --text hi --device cuda", "cuda"),
    case("embed-img-size-big", "embed --model {model_big} --text hi", "img_size"),
    case("embed-random-safetensors", "embed --model {model_rand} --text hi", "{model_rand}"),
    case("embed-start-negative", "embed --model {model} --video {video} --start -1", "--start"),
    # ---- synth
    case("synth-seed-negative", "synth {tmp}/synth-a --seed -1", "--seed"),
    case("synth-videos-0", "synth {tmp}/synth-b --videos 0", "--videos"),
    case("synth-out-is-file", "synth {afile}", "{afile}"),
    case("synth-out-under-file", "synth {afile}/world", "{afile}"),
    case("synth-out-in-proc", "synth /proc/egovlp-synth", "/proc/egovlp-synth"),
    # ---- shard
    case("shard-frames-0", "shard --csv {csv} --videos {videos} --out {tmp}/sh-a --frames 0", "--frames"),
    case("shard-workers-negative", "shard --csv {csv} --videos {videos} --out {tmp}/sh-b --workers -1", "--workers"),
    case("shard-out-is-file", "shard --csv {csv} --videos {videos} --out {afile}", "{afile}"),
    case("shard-videos-is-file", "shard --csv {csv} --videos {afile} --out {tmp}/sh-c", "{afile}"),
    case("shard-csv-random-bytes", "shard --csv {rand} --videos {videos} --out {tmp}/sh-d", "{rand}"),
    case("shard-all-videos-missing", "shard --csv {csv} --videos {emptydir} --out {tmp}/sh-e --workers 0", "{emptydir}"),
    # ---- loader
    case("loader-batch-size-0", "loader --shards {shards} --taxonomy {world} --batch-size 0", "batch"),
    case("loader-workers-negative", "loader --shards {shards} --taxonomy {world} --workers -1", "workers"),
    case("loader-corrupt-shard-tar", "loader --shards {bad_shards} --taxonomy {world} --workers 0", "shard-000000.tar"),
    case("loader-taxonomy-is-file", "loader --shards {shards} --taxonomy {afile}", "{afile}"),
    # ---- pretrain
    case("pretrain-steps-negative", "pretrain --config {pretrain_yaml} train.steps=-3", "steps"),
    case("pretrain-checkpoint-every-negative", "pretrain --config {pretrain_yaml} train.checkpoint_every=-1", "checkpoint_every"),
    case("pretrain-grad-accum-0", "pretrain --config {pretrain_yaml} train.grad_accum=0", "grad_accum"),
    case("pretrain-batch-size-0", "pretrain --config {pretrain_yaml} data.batch_size=0", "batch_size"),
    case("pretrain-num-processes-negative", "pretrain --config {pretrain_yaml} --num-processes -2", "num-processes"),
    case("pretrain-steps-list", "pretrain --config {pretrain_steps_list}", "steps"),
    case("pretrain-config-scalar", "pretrain --config {scalar_yaml}", "{scalar_yaml}"),
    case("pretrain-config-invalid-yaml", "pretrain --config {invalid_yaml}", "{invalid_yaml}"),
    case("pretrain-config-is-dir", "pretrain --config {emptydir}", "{emptydir}"),
    case("pretrain-init-vit-random", "pretrain --config {pretrain_yaml} init=vit:{rand}", "{rand}"),
    case("pretrain-output-under-file", "pretrain --config {pretrain_yaml} output_dir={afile}/run", "{afile}"),
    case("pretrain-corrupt-shard-tar", "pretrain --config {pretrain_yaml} data.shards={bad_shards}", "shard-000000.tar"),
    # ---- extract
    case("extract-batch-size-0", "extract --model {model} --preset nlq --input {videos} --out {tmp}/ex-a --batch-size 0", "--batch-size"),
    case("extract-device-bogus", "extract --model {model} --preset nlq --input {videos} --out {tmp}/ex-c --device bogus", "bogus"),
    case("extract-device-cuda", "extract --model {model} --preset nlq --input {videos} --out {tmp}/ex-d --device cuda", "cuda"),
    case("extract-out-is-file", "extract --model {model} --preset nlq --input {videos} --out {afile}", "{afile}"),
    case("extract-out-under-file", "extract --model {model} --preset nlq --input {videos} --out {afile}/ex", "{afile}"),
    case("extract-input-missing", "extract --model {model} --preset nlq --input {tmp}/no-such-input --out {tmp}/ex-e", "no-such-input"),
    case("extract-defaults-scalar", "extract --defaults {scalar_yaml} --model {model} --preset nlq --input {videos} --out {tmp}/ex-f", "{scalar_yaml}"),
    case("extract-defaults-invalid", "extract --defaults {invalid_yaml} --model {model} --preset nlq --input {videos} --out {tmp}/ex-g", "{invalid_yaml}"),
    case("extract-img-size-big", "extract --model {model_big} --preset nlq --input {videos} --out {tmp}/ex-h", "img_size"),
    case("extract-random-model", "extract --model {rand} --preset nlq --input {videos} --out {tmp}/ex-i", "{rand}"),
    # ---- index
    case("index-nlist-negative", "index --features {features} --out {tmp}/ix-a --kind ivf --nlist -1", "nlist"),
    case("index-out-is-file", "index --features {features} --out {afile}", "{afile}"),
    case("index-features-is-file", "index --features {afile} --out {tmp}/ix-b", "{afile}"),
    case("index-features-empty", "index --features {emptydir} --out {tmp}/ix-c", "{emptydir}"),
    case("index-sidecar-wrong-type", "index --features {features_bad_sidecar} --out {tmp}/ix-d", "num_rows"),
    case("index-add-corrupt-index", "index --features {features} --out {index_corrupt} --add", "{index_corrupt}"),
    # ---- serve (startup)
    case("serve-random-model", "serve --model {rand}", "{rand}"),
    case("serve-img-size-big", "serve --model {model_big}", "img_size"),
    case("serve-device-bogus", "serve --model {model} --device bogus", "bogus"),
    case("serve-device-cuda", "serve --model {model} --device cuda", "cuda"),
    case("serve-max-batch-0", "serve --model {model} --max-batch 0", "max-batch"),
    case("serve-port-99999", "serve --model {model} --port 99999", "99999"),
    case("serve-log-level-bogus", "serve --model {model} --log-level bogus", "bogus"),
    case("serve-index-corrupt", "serve --model {model} --index {index_corrupt}", "{index_corrupt}"),
    case("serve-index-empty", "serve --model {model} --index {emptydir}", "{emptydir}"),
    # ---- heads
    case("heads-train-batch-size-negative", "heads train nlq --ann {nlq_ann} --features {features} --text-features {text_features} --out {tmp}/hd-a --batch-size -1", "batch"),
    case("heads-train-epochs-0", "heads train nlq --ann {nlq_ann} --features {features} --text-features {text_features} --out {tmp}/hd-b --epochs 0", "epochs"),
    case("heads-train-lr-negative", "heads train nlq --ann {nlq_ann} --features {features} --text-features {text_features} --out {tmp}/hd-c --lr -1", "lr"),
    case("heads-train-out-under-file", "heads train nlq --ann {nlq_ann} --features {features} --text-features {text_features} --out {afile}/hd", "{afile}"),
    case("heads-train-device-bogus", "heads train nlq --ann {nlq_ann} --features {features} --text-features {text_features} --out {tmp}/hd-d --device bogus", "bogus"),
    case("heads-train-config-scalar", "heads train nlq --config {scalar_yaml} --ann {nlq_ann} --features {features} --text-features {text_features} --out {tmp}/hd-e", "{scalar_yaml}"),
    case("heads-predict-random-checkpoint", "heads predict nlq --checkpoint {rand} --ann {nlq_ann} --features {features} --text-features {text_features} --out {tmp}/hd-f.json", "{rand}"),
    # ---- eval
    case("eval-egomcq-empty-data", "eval egomcq --model {model} --data {empty_json} --videos {videos}", "{empty_json}"),
    case("eval-nlq-gt-missing", "eval nlq --gt {tmp}/no-such-gt.json --pred {nlq_pred}", "no-such-gt.json"),
    case("eval-nlq-out-under-file", "eval nlq --gt {nlq_gt} --pred {nlq_pred} --out {afile}/m.json", "{afile}"),
    case("eval-mq-pred-random", "eval mq --gt {mq_gt} --pred {rand}", "{rand}"),
    case("eval-vq2d-null-visual-crop", "eval vq2d --gt {vq_gt_null_crop} --pred {vq_pred}", "visual_crop"),
    case("eval-vq2d-null-query-frame", "eval vq2d --gt {vq_gt_null_frame} --pred {vq_pred}", "query_frame"),
    case("eval-vq2d-width-wide", "eval vq2d --gt {vq_gt_wide} --pred {vq_pred}", "width"),
]
# fmt: on


SUBPROCESS = [c for c in CASES if c.needs_subprocess]


# --------------------------------------------------------------------------------------------
# fixtures: built once


def _nlq_files(tmp: Path) -> dict[str, Path]:
    query = {"clip_start_sec": 0.0, "clip_end_sec": 10.0, "query": "q"}
    annotation = {"annotation_uid": "a", "language_queries": [query]}
    gt = {"videos": [{"video_uid": "v", "clips": [{"clip_uid": "c", "annotations": [annotation]}]}]}
    pred = {
        "version": "1.0",
        "challenge": "ego4d_nlq_challenge",
        "results": [{"clip_uid": "c", "annotation_uid": "a", "query_idx": 0, "predicted_times": [[0, 5]]}],
    }
    label = {"label": "cut", "start_time": 0.0, "end_time": 10.0, "primary": True}
    mq_gt = {"videos": [{"clips": [{"clip_uid": "c", "annotations": [{"labels": [label]}]}]}]}
    files = {"nlq_gt": gt, "nlq_pred": pred, "mq_gt": mq_gt}
    return {k: write_json(tmp / f"{k}.json", v) for k, v in files.items()}


def _vq_files(tmp: Path) -> dict[str, Path]:
    track = [{"frame_number": 3, "x": 0, "y": 0, "width": 4, "height": 4}]

    def gt(query_set: dict) -> dict:
        qs = {
            "is_valid": True,
            "query_frame": 9,
            "visual_crop": {**track[0], "frame_number": 8},
            "response_track": track,
            **query_set,
        }
        clip = {"clip_uid": "c", "annotations": [{"query_sets": {"1": qs}}]}
        return {"videos": [{"video_uid": "v", "clips": [clip]}]}

    box = {"fno": 3, "x1": 0, "y1": 0, "x2": 4, "y2": 4}
    clip = {"clip_uid": "c", "predictions": [{"query_sets": {"1": {"bboxes": [box], "score": 1.0}}}]}
    pred = {"results": {"videos": [{"video_uid": "v", "clips": [clip]}]}}
    files = {
        "vq_gt_null_crop": gt({"visual_crop": None}),
        "vq_gt_null_frame": gt({"query_frame": None}),
        "vq_gt_wide": gt({"visual_crop": {**track[0], "frame_number": 8, "width": "wide"}}),
        "vq_pred": pred,
    }
    return {k: write_json(tmp / f"{k}.json", v) for k, v in files.items()}


def _model_files(tmp: Path) -> dict[str, Path]:
    files = micro_model_files()
    big = shutil.copytree(files["model"], tmp / "model-big")
    config = json.loads((big / "config.json").read_text())
    config["video"]["img_size"] = "big"
    write_json(big / "config.json", config)
    rand = shutil.copytree(files["model"], tmp / "model-rand")
    (rand / "model.safetensors").write_bytes(os.urandom(4096))
    return {**files, "model_big": big, "model_rand": rand}


def _world(tmp: Path) -> dict[str, Path]:
    world, shards = synthetic_world(), world_shards()
    bad = tmp / "bad-shards"
    bad.mkdir()
    (bad / "shard-000000.tar").write_bytes(os.urandom(20_000))  # random bytes where a tar should be
    shutil.copy(shards / "sizes.json", bad / "sizes.json")
    return {
        "world": world,
        "videos": world / "videos",
        "csv": world / "egoclip.csv",
        "shards": shards,
        "bad_shards": bad,
        "nlq_ann": world / "nlq_train.json",
        "egomcq": world / "egomcq.json",
        "video": next(iter(sorted((world / "videos").glob("*.mp4")))),
    }


def _features(tmp: Path) -> dict[str, Path]:
    made = extracted_features()
    features = made["features"]
    index = tmp / "index"
    built = run_egovlp(["index", "--features", str(features), "--out", str(index)])
    assert built.code == 0, built.stderr[-2000:]
    corrupt = shutil.copytree(index, tmp / "index-corrupt")
    for path in corrupt.iterdir():
        if path.suffix == ".faiss":
            path.write_bytes(os.urandom(2048))
    bad = shutil.copytree(features, tmp / "features-bad-sidecar")
    sidecar = sorted(p for p in bad.glob("*.json"))[0]
    meta = json.loads(sidecar.read_text())
    meta["num_rows"] = "many"
    write_json(sidecar, meta)
    return {**made, "index": index, "index_corrupt": corrupt, "features_bad_sidecar": bad}


def _configs(tmp: Path, f: dict[str, Path]) -> dict[str, Path]:
    (tmp / "scalar.yaml").write_text("3\n")
    (tmp / "invalid.yaml").write_text("a: [1, 2\nb: {\n")
    (tmp / "empty.json").write_text("{}\n")
    (tmp / "random.bin").write_bytes(os.urandom(3000))
    (tmp / "afile").write_text("a regular file where a folder is expected\n")
    (tmp / "emptydir").mkdir()
    pretrain = {
        "model": str(f["micro_yaml"]),
        "init": "",
        "output_dir": str(tmp / "pretrain-out"),
        "data": {"shards": str(f["shards"]), "taxonomy": str(f["world"]), "batch_size": 2, "num_workers": 0},
        "train": {"steps": 1, "checkpoint_every": 0, "log_every": 1, "warmup_steps": 0},
    }
    (tmp / "pretrain.yaml").write_text(yaml.safe_dump(pretrain))
    pretrain["train"]["steps"] = [2]
    (tmp / "pretrain-steps-list.yaml").write_text(yaml.safe_dump(pretrain))
    return {
        "scalar_yaml": tmp / "scalar.yaml",
        "invalid_yaml": tmp / "invalid.yaml",
        "empty_json": tmp / "empty.json",
        "rand": tmp / "random.bin",
        "afile": tmp / "afile",
        "emptydir": tmp / "emptydir",
        "pretrain_yaml": tmp / "pretrain.yaml",
        "pretrain_steps_list": tmp / "pretrain-steps-list.yaml",
    }


def build_fixtures(tmp: Path) -> dict[str, str]:
    f: dict[str, Path] = {"tmp": tmp}
    f.update(_model_files(tmp))
    f.update(_world(tmp))
    f.update(_configs(tmp, f))
    f.update(_nlq_files(tmp))
    f.update(_vq_files(tmp))
    f.update(_features(tmp))
    return {k: str(v) for k, v in f.items()}


@pytest.fixture(scope="module")
def fixtures() -> Iterator[dict[str, str]]:
    # a private folder, not pytest's numbered tmp: concurrent pytest sessions rotate those away
    with tempfile.TemporaryDirectory(prefix="egovlp-bad-inputs-") as tmp:
        yield build_fixtures(Path(tmp))


def _argv(c: Case, f: dict[str, str]) -> list[str]:
    return [a.format(**f) for a in c.argv]


@pytest.fixture(scope="module")
def subprocess_results(fixtures, request) -> Iterator[dict[str, Future[CliRun]]]:
    """The selected SUBPROCESS cases, started with the first case, running while the others run here."""
    selected = {
        item.callspec.params["c"].id
        for item in request.session.items
        if item.module is request.module and "c" in getattr(getattr(item, "callspec", None), "params", {})
    }
    # the subprocesses are mostly interpreter start-up (importing torch): one per core
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        yield {
            c.id: pool.submit(
                run_egovlp_subprocess,
                _argv(c, fixtures),
                SERVE_TIMEOUT_S if c.argv[0] == "serve" else TIMEOUT_S,
            )
            for c in SUBPROCESS
            if c.id in selected
        }


def test_table_is_large_and_covers_every_command():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
    # the subprocess cases are the few that need one (module docstring), not a way around run()
    assert {c.argv[0] for c in SUBPROCESS} <= {"serve", "embed", "extract"} and len(SUBPROCESS) <= 12
    commands = {c.argv[0] if c.argv[0] != "eval" else f"eval {c.argv[1]}" for c in CASES}
    commands |= {f"heads {c.argv[1]}" for c in CASES if c.argv[0] == "heads"}
    for command in (
        "convert",
        "embed",
        "synth",
        "shard",
        "loader",
        "pretrain",
        "extract",
        "index",
        "serve",
        "heads train",
        "heads predict",
        "eval egomcq",
        "eval nlq",
        "eval mq",
        "eval vq2d",
    ):
        assert command in commands, command


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2(c: Case, fixtures, subprocess_results):
    argv = _argv(c, fixtures)
    result = subprocess_results[c.id].result() if c.needs_subprocess else run_egovlp(argv)
    code, stderr = result.code, result.stderr
    shown = "egovlp " + " ".join(argv)
    assert "Traceback" not in stderr, f"{shown}\n{stderr[-3000:]}"
    assert code == 2, f"{shown}: exit {code}\n{stderr[-3000:]}"
    # a progress bar drawn before the failure is not a message (tqdm fragments end in "\r")
    lines = [line for line in stderr.splitlines() if line.strip() and not PROGRESS_BAR.search(line)]
    assert len(lines) == 1, f"{shown}: {len(lines)} stderr lines:\n{stderr[-3000:]}"
    assert lines[0].startswith("egovlp "), lines[0]
    assert c.names.format(**fixtures) in lines[0], f"{shown}: the line does not name {c.names!r}: {lines[0]}"
