"""`make demo`: the main job end to end on the embedded synthetic world, on the CPU.

synth -> shards -> EgoMCQ of the untrained model -> EgoNCE pretraining -> EgoMCQ again ->
NLQ features -> FAISS index -> the service answers one text search. Each stage runs the real
`egovlp` command in a subprocess (this module imports no application), prints what it measured
and adds it to `summary.json` as soon as it is known, so a failed stage keeps what came before.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from egovlp.cli_args import OneLineParser
from egovlp.config import find_config
from egovlp.formats import write_json_atomic
from egovlp.synth.cli import add_world_arguments

ROOT = Path(__file__).resolve().parents[1]
# a packaged pretrain config (egovlp/configs/pretrain/demo.yaml in a wheel, configs/ in a checkout)
DEMO_CONFIG = "demo"
# The demo world: 84 training scenes (a tiny model trained from scratch generalizes to new scenes
# only with many of them) and 36 val videos, which give EgoMCQ some 230 questions of each type
# (one question is under half a point, so a result is a measurement rather than a coin toss).
DEMO_VIDEOS = 120
DEMO_VAL_VIDEOS = 36


def egovlp(*args: str, capture: bool = False) -> str:
    cmd = [sys.executable, "-m", "egovlp", *args]
    print(f"$ egovlp {' '.join(args)}", file=sys.stderr, flush=True)
    result = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE if capture else None, text=True)
    if result.returncode != 0:
        raise SystemExit(f"demo: `egovlp {args[0]}` failed with exit code {result.returncode}")
    return result.stdout if capture else ""


def _own_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) of process `pid` itself, from /proc; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def egovlp_timed(*args: str) -> dict:
    """Run `egovlp ARGS` and measure it: wall seconds, the CPU seconds of the process itself (its
    torch threads; polled, so up to a second short) and of the process with its children (the
    DataLoader workers). On a shared machine wall time grows with the load, CPU time hardly."""
    cmd = [sys.executable, "-m", "egovlp", *args]
    print(f"$ egovlp {' '.join(args)}", file=sys.stderr, flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT)
    own = None
    while proc.poll() is None:
        own = _own_cpu_seconds(proc.pid) or own
        time.sleep(0.5)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"demo: `egovlp {args[0]}` failed with exit code {proc.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    tree = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "seconds": round(wall, 1),
        "cpu_seconds": None if own is None else round(own, 1),
        "cpu_seconds_with_workers": round(tree, 1),
    }


class Summary:
    def __init__(self, path: Path) -> None:
        self.path, self.data = path, {}

    def add(self, **items) -> None:
        self.data.update(items)
        write_json_atomic(self.data, self.path, indent=2)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(description=__doc__)
    p.add_argument("--out", default="demo-output")
    add_world_arguments(p, videos=DEMO_VIDEOS, val_videos=DEMO_VAL_VIDEOS)
    p.add_argument("--train-seed", type=int, default=None, help="override the demo config's train.seed")
    p.add_argument("--steps", type=int, default=None, help="override the demo config's training steps")
    p.add_argument("--skip-serve", action="store_true")
    args = p.parse_args(argv)
    demo_config = find_config("pretrain", DEMO_CONFIG)

    out = Path(args.out).resolve()  # relative to where the user runs it, not to the package
    data = out / "data"
    out.mkdir(parents=True, exist_ok=True)
    summary = Summary(out / "summary.json")
    t_start = time.perf_counter()

    if not (data / "egomcq.json").is_file():
        world = ["--videos", str(args.videos), "--val-videos", str(args.val_videos), "--seed", str(args.seed)]
        egovlp("synth", str(data), *world)
    summary.add(world={"seed": args.seed, "videos": args.videos, "val_videos": args.val_videos})
    if not (data / "shards" / "sizes.json").is_file():
        egovlp(
            "shard",
            "--csv",
            str(data / "egoclip.csv"),
            "--videos",
            str(data / "videos"),
            "--out",
            str(data / "shards"),
            "--shard-size",
            "64",
            "--workers",
            "2",
            "--seed",
            str(args.seed),
        )

    # the untrained model (the demo config's), saved so that eval runs the same code path as after training
    demo_model = yaml.safe_load(demo_config.read_text())["model"]
    untrained = out / "untrained"
    if not (untrained / "model.safetensors").is_file():
        subprocess.run(
            [
                sys.executable,
                "-c",
                (
                    "import torch, egovlp; torch.manual_seed(0); "
                    f"egovlp.create_model({demo_model!r}).save_pretrained({str(untrained)!r})"
                ),
            ],
            cwd=ROOT,
            check=True,
        )
    mcq = ["--data", str(data / "egomcq.json"), "--videos", str(data / "videos"), "--workers", "1"]
    before = json.loads(egovlp("eval", "egomcq", "--model", str(untrained), *mcq, capture=True))
    print(f"EgoMCQ before training: inter {before['inter']:.1f}%  intra {before['intra']:.1f}%", flush=True)
    summary.add(egomcq_before=before)

    # the demo measures EgoMCQ itself, before and after, so the trainer skips its own final pass
    overrides = [
        f"output_dir={out / 'pretrain'}",
        f"data.shards={data / 'shards'}",
        f"data.taxonomy={data}",
        "egomcq.data=",
    ]
    if args.steps:
        overrides.append(f"train.steps={args.steps}")
    if args.train_seed is not None:
        overrides.append(f"train.seed={args.train_seed}")
    shutil.rmtree(out / "pretrain", ignore_errors=True)
    timing = egovlp_timed("pretrain", "--config", str(demo_config), *overrides)
    pretrain_seconds = timing["seconds"]
    model_dir = out / "pretrain" / "final"
    after = json.loads(egovlp("eval", "egomcq", "--model", str(model_dir), *mcq, capture=True))
    print(
        f"EgoMCQ after {pretrain_seconds:.0f}s of training: inter {after['inter']:.1f}%  "
        f"intra {after['intra']:.1f}%",
        flush=True,
    )
    print(
        f"pretrain CPU time: {timing['cpu_seconds']}s in the trainer process, "
        f"{timing['cpu_seconds_with_workers']}s with its data-loader workers",
        flush=True,
    )
    summary.add(
        egomcq_after=after,
        pretrain_seconds=pretrain_seconds,
        pretrain_cpu_seconds=timing["cpu_seconds"],
        pretrain_cpu_seconds_with_workers=timing["cpu_seconds_with_workers"],
    )

    _extract_index_search(args, out, data, model_dir, summary)
    summary.add(total_seconds=round(time.perf_counter() - t_start, 1))
    print(f"summary: {out / 'summary.json'}")
    return 0


def _extract_index_search(args, out: Path, data: Path, model_dir: Path, summary: Summary) -> None:
    """NLQ features of the val clips, a FAISS index over them, one text search through the service."""
    if not (ROOT / "extract" / "cli.py").is_file():
        return
    feats = out / "features" / "nlq"
    t0 = time.perf_counter()
    egovlp(
        "extract",
        "--model",
        str(model_dir),
        "--preset",
        "nlq",
        "--input",
        str(data / "nlq_val.json"),
        "--videos",
        str(data / "videos"),
        "--out",
        str(feats),
        "--workers",
        "1",
    )
    extract_seconds = time.perf_counter() - t0
    sidecars = sorted(p for p in feats.glob("*.json"))
    shapes = {
        p.stem: [json.loads(p.read_text())["num_rows"], json.loads(p.read_text())["dim"]] for p in sidecars
    }
    print(f"extracted NLQ features for {len(shapes)} clips in {extract_seconds:.1f}s:", flush=True)
    for name, shape in list(shapes.items())[:5]:
        print(f"  {name}.pt  [{shape[0]}, {shape[1]}] float32 at 1.875 rows/s", flush=True)
    summary.add(
        extract={
            "clips": len(shapes),
            "seconds": round(extract_seconds, 1),
            "dir": str(feats),
            "shapes": shapes,
        }
    )
    if args.skip_serve or not (ROOT / "serve" / "app.py").is_file():
        return
    index = out / "index"
    egovlp("index", "--features", str(feats), "--out", str(index))
    summary.add(search=_one_search(model_dir, index))


def _one_search(model_dir: Path, index: Path, port: int = 8765) -> list:
    cmd = [
        sys.executable,
        "-m",
        "egovlp",
        "serve",
        "--model",
        str(model_dir),
        "--index",
        str(index),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(base + "/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(1)
        query = "C picks up the red cup"
        body = json.dumps({"query": query, "k": 5}).encode()
        req = urllib.request.Request(
            base + "/v1/search", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            results = json.loads(r.read())["results"]
        print(f"search {query!r}:")
        for hit in results:
            print(f"  {hit['score']:.3f}  {hit['clip_uid']}  {hit['start']:.1f}-{hit['end']:.1f}s")
        return results
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
