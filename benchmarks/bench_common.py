"""What the head benchmarks (bench_heads.py, bench_grounding.py, ablations.py) share: running the real
`egovlp` command, and the model they extract features with when `--model` is not given."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# the demo's pretrained model (`make demo`), the default extraction model when it is there
DEMO_MODEL = ROOT / "demo-output" / "pretrain" / "final"


def egovlp(*args: str, capture: bool = False) -> str:
    """`python -m egovlp ARGS` from the repository root (raises on a non-zero exit); its stdout
    when `capture`, else the output is dropped and "" returned."""
    print(f"$ egovlp {' '.join(args)}", file=sys.stderr, flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "egovlp", *args],
        cwd=ROOT,
        check=True,
        text=True,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
    )
    return done.stdout or ""


def extraction_model(model: Path | None, out: Path) -> Path:
    """`model` when given, else the demo's pretrained model, else a tiny untrained one (seed 0) saved
    once as `out/tiny-untrained`."""
    if model is not None:
        return Path(model)
    if DEMO_MODEL.is_dir():
        return DEMO_MODEL
    tiny = out / "tiny-untrained"
    if not (tiny / "model.safetensors").is_file():
        import egovlp as lib

        torch.manual_seed(0)
        lib.create_model("tiny").save_pretrained(str(tiny))
    return tiny


# (preset, annotation file stem, features folder) of the head benchmarks: read as
# `data/{stem}_{split}.json` for the train and val splits, written to `features/{folder}` (a
# `{split}` in the folder filled in)
Extraction = tuple[str, str, str]


def synth_and_extract(
    out: Path, videos: int, seed: int, model: Path, extractions: tuple[Extraction, ...], *synth_options: str
) -> dict[str, Path]:
    """One synthetic world under `out/data` (made once; `synth_options` passed on) and, for each split,
    the features of `extractions` under `out/features` by `model`; {"data", "feats", "model"}."""
    data, feats = out / "data", out / "features"
    if not (data / "world.json").is_file():
        egovlp(
            "synth",
            str(data),
            "--videos",
            str(videos),
            "--short-side",
            "128",
            "--duration",
            "30",
            "--seed",
            str(seed),
            *synth_options,
        )
    common = ["--model", str(model), "--videos", str(data / "videos"), "--no-progress"]
    for split in ("train", "val"):
        for preset, stem, folder in extractions:
            egovlp(
                "extract",
                *common,
                "--preset",
                preset,
                "--input",
                str(data / f"{stem}_{split}.json"),
                "--out",
                str(feats / folder.format(split=split)),
            )
    return {"data": data, "feats": feats, "model": model}
