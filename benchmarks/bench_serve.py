"""Bounded loopback load test of `egovlp serve`: throughput and p50/p99 at concurrency 1, 8, 32,
in fp32 and bf16 side by side.

    python benchmarks/bench_serve.py                       # tiny random model, text + video, fp32 and bf16
    python benchmarks/bench_serve.py --model DIR --requests 400 --time-limit 30
    python benchmarks/bench_serve.py --precision bf16      # one precision only
    python benchmarks/bench_serve.py --mixed               # 60 s mixed + poisoned load, --workers 1 and 2

For each `--precision` it starts the service on 127.0.0.1 (a free port) in a subprocess, sends a
fixed number of requests per level (stopping early at --time-limit seconds), and reads the server's
own stage clocks from /metrics: per video request the decode (in the pool of --max-decodes
workers) and per batch the model. The stage that bounds a suite is the busier one: decode busy =
decode seconds / (wall x decode workers), model busy = model seconds / wall (one model thread);
`requests` when neither is busy half the time (then HTTP and JSON handling bound it).
Then an overload burst beyond the queue shows that it answers 429s, never 5xx. Prints one JSON line
per measurement and a summary JSON object last, with `bf16_vs_fp32` (throughput ratio per suite and
concurrency) and `bound` (decode, model or requests per suite). Only loopback traffic; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _tiny_model(out: Path) -> Path:
    """A randomly initialised small EgoVLP (32 px, 2 blocks) saved with save_pretrained."""
    import torch

    import egovlp
    from egovlp.config import ModelConfig, TextTowerConfig, VideoTowerConfig

    torch.manual_seed(0)
    cfg = ModelConfig(
        video=VideoTowerConfig(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_frames=4),
        text=TextTowerConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=128, max_position_embeddings=64),
        projection_dim=32,
        name="bench-tiny",
    )
    egovlp.create_model(cfg).save_pretrained(str(out))
    return out


def _tiny_video(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(20):
            img = np.full((48, 64, 3), (10 * i) % 255, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _level(url: str, payload: dict, concurrency: int, requests: int, time_limit: float) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    sent = 0
    stop_at = time.perf_counter() + time_limit

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < requests and time.perf_counter() < stop_at:
            sent += 1
            t0 = time.perf_counter()
            try:
                r = await client.post(url, json=payload)
                code = r.status_code
            except httpx.HTTPError:
                code = -1  # transport failure
            statuses[code] = statuses.get(code, 0) + 1
            if code == 200:
                latencies.append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    lat = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return {
        "concurrency": concurrency,
        "requests": sum(statuses.values()),
        "ok": statuses.get(200, 0),
        "status_429": statuses.get(429, 0),
        "status_5xx": sum(n for c, n in statuses.items() if c >= 500),
        "transport_errors": statuses.get(-1, 0),
        "seconds": round(elapsed, 3),
        "throughput_rps": round(statuses.get(200, 0) / elapsed, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
    }


def _tiny_index(model_dir: str, out: Path) -> Path:
    """An index over random features stamped with the tiny model's identity (search needs one)."""
    import egovlp
    from egovlp.features import model_identity
    from serve.index.cli import build_index

    model = egovlp.load_model(model_dir)
    ident = model_identity(model, "bench-tiny")
    feats = out / "features"
    feats.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(20):
        rows = rng.standard_normal((100, model.cfg.projection_dim)).astype(np.float32)
        np.save(feats / f"clip{i}.npy", rows)
        times = [[j / 1.875, (j + 1) / 1.875] for j in range(100)]
        meta = {
            "clip_uid": f"clip{i}",
            "video_uid": f"v{i}",
            "num_rows": 100,
            "row_times": times,
            "dim": model.cfg.projection_dim,
            **ident.as_meta(),
        }
        (feats / f"clip{i}.json").write_text(json.dumps(meta))
    build_index(feats, out / "index")
    return out / "index"


def _tree_rss_mb(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20


def mixed(args: argparse.Namespace) -> int:
    """60 s of mixed text/video/search with poisoned inputs at concurrency 64, for --workers 1 and 2."""
    from benchmarks.loadtest import run_load

    summary: dict = {"mode": "mixed", "duration_s": args.duration, "concurrency": args.mixed_concurrency}
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(_tiny_model(Path(tmp) / "model"))
        index = _tiny_index(model, Path(tmp))
        videos = Path(tmp) / "videos"
        videos.mkdir()
        _tiny_video(videos / "v.mp4")
        for workers in args.workers:
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            cmd = [
                sys.executable,
                "-m",
                "egovlp",
                "serve",
                "--model",
                model,
                "--index",
                str(index),
                "--allowed-root",
                str(videos),
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
            ]
            server = subprocess.Popen(cmd, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT)
            try:
                _wait_ready(url, server)
                asyncio.run(run_load(url, "v.mp4", duration_s=5, concurrency=args.mixed_concurrency, seed=1))
                rss_before = _tree_rss_mb(server.pid)
                result = asyncio.run(
                    run_load(
                        url, "v.mp4", duration_s=args.duration, concurrency=args.mixed_concurrency, seed=2
                    )
                )
                rss_after = _tree_rss_mb(server.pid)
            finally:
                server.terminate()
                server.wait(30)
            row = result.summary() | {
                "workers": workers,
                "rss_before_mb": round(rss_before, 1),
                "rss_after_mb": round(rss_after, 1),
                "rss_growth": round(rss_after / rss_before - 1, 4),
                "unexpected_examples": result.unexpected[:3],
            }
            print(json.dumps(row), flush=True)
            summary[f"workers_{workers}"] = {k: v for k, v in row.items() if k != "statuses"}
    if "workers_1" in summary and "workers_2" in summary and summary["workers_1"]["good_ok_per_s"]:
        summary["speedup_workers_2"] = round(
            summary["workers_2"]["good_ok_per_s"] / summary["workers_1"]["good_ok_per_s"], 2
        )
    print(json.dumps(summary))
    return 0


def _wait_ready(url: str, server: subprocess.Popen) -> None:
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            raise SystemExit(f"server exited with {server.returncode}")
        time.sleep(0.2)
    raise SystemExit("server not ready after 300 s")


def _stage_seconds(url: str) -> dict[str, float]:
    """The server's cumulative stage clocks from /metrics: decode, and model time per modality."""
    text = httpx.get(url + "/metrics", timeout=10).text
    out = {"decode": 0.0, "model_text": 0.0, "model_video": 0.0}
    for line in text.splitlines():
        if line.startswith("egovlp_decode_seconds_sum"):
            out["decode"] = float(line.split()[-1])
        elif line.startswith("egovlp_inference_seconds_sum"):
            modality = line.split('modality="', 1)[1].split('"', 1)[0]
            out[f"model_{modality}"] = float(line.split()[-1])
    return out


def _suite(url: str, name: str, route: str, payload: dict, args: argparse.Namespace, precision: str) -> dict:
    """Every concurrency level of one suite, and which stage bounded it (from the server's clocks)."""
    asyncio.run(_level(url + route, payload, 4, 8, 10))  # warm-up
    before, started = _stage_seconds(url), time.perf_counter()
    rows = []
    for c in args.concurrency:
        requests = args.requests if name == "text" else max(args.requests // 4, c)
        row = {"precision": precision, "modality": name}
        row |= asyncio.run(_level(url + route, payload, c, requests, args.time_limit))
        print(json.dumps(row), flush=True)
        rows.append(row)
    wall = time.perf_counter() - started
    after = _stage_seconds(url)
    decode_busy = (after["decode"] - before["decode"]) / (wall * args.max_decodes)
    model_busy = (after[f"model_{name}"] - before[f"model_{name}"]) / wall
    out = {"levels": rows, "model_busy": round(model_busy, 3)}
    if name == "video":
        out["decode_busy"] = round(decode_busy, 3)
    # the busier stage bounds; when neither is busy half the time, request handling does (HTTP,
    # JSON, the event loop: the tiny model's case)
    busiest = "decode" if name == "video" and decode_busy > model_busy else "model"
    out["bound"] = busiest if max(model_busy, decode_busy if name == "video" else 0.0) >= 0.5 else "requests"
    if len(rows) > 1 and rows[0]["throughput_rps"] > 0:
        out[f"speedup_c{rows[-1]['concurrency']}_vs_c{rows[0]['concurrency']}"] = round(
            rows[-1]["throughput_rps"] / rows[0]["throughput_rps"], 2
        )
    return out


def run_precision(model: str, video: Path, precision: str, args: argparse.Namespace, overload: bool) -> dict:
    """One server at `precision`: every suite (and the overload burst); what /info says ran."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-c", "import sys; from serve.cli import main; sys.exit(main(sys.argv[1:]))"]
    cmd += [
        "--model",
        model,
        "--port",
        str(port),
        "--max-queue",
        str(args.max_queue),
        "--max-decodes",
        str(args.max_decodes),
        "--precision",
        precision,
        "--log-level",
        "warning",
    ]
    if args.device:
        cmd += ["--device", args.device]
    server = subprocess.Popen(cmd, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT)
    try:
        _wait_ready(url, server)
        info = httpx.get(url + "/info", timeout=10).json()
        out: dict = {"device": info["device"], "ran": info["precision"]["text"]}
        text = {"input": "#C C picks up the knife from the counter", "model": "egovlp"}
        suites = [("text", "/v1/embeddings", text)]
        if not args.no_video:
            data_url = "data:video/mp4;base64," + base64.b64encode(video.read_bytes()).decode()
            suites.append(("video", "/v1/video/embeddings", {"input": data_url}))
        for name, route, payload in suites:
            out[name] = _suite(url, name, route, payload, args, precision)
        if overload:
            burst = asyncio.run(
                _level(url + "/v1/embeddings", text, args.overload, args.overload * 2, args.time_limit)
            )
            print(json.dumps({"precision": precision, "modality": "text-overload", **burst}), flush=True)
            out["overload"] = burst
        return out
    finally:
        server.terminate()
        server.wait(20)


def compare(runs: dict[str, dict], base: str = "fp32", other: str = "bf16") -> dict:
    """other / base throughput per suite and concurrency level (> 1: `other` is faster)."""
    out = {}
    for name in ("text", "video"):
        if name not in runs[base] or name not in runs[other]:
            continue
        for a, b in zip(runs[base][name]["levels"], runs[other][name]["levels"], strict=True):
            if a["throughput_rps"] > 0:
                out[f"{name}_c{a['concurrency']}"] = round(b["throughput_rps"] / a["throughput_rps"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model dir/.pth (default: a tiny random model)")
    parser.add_argument("--device", default=None, help="the server's --device (default: its auto)")
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["fp32", "bf16"],
        choices=["fp32", "bf16", "fp16"],
        help="one server per precision, side by side (default: fp32 bf16)",
    )
    parser.add_argument("--requests", type=int, default=200, help="requests per level")
    parser.add_argument("--time-limit", type=float, default=20.0, help="seconds per level at most")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--overload", type=int, default=256, help="burst concurrency for the 429 check")
    parser.add_argument("--max-queue", type=int, default=64, help="server queue bound")
    parser.add_argument("--max-decodes", type=int, default=4, help="server decode workers")
    parser.add_argument("--no-video", action="store_true")
    parser.add_argument(
        "--mixed", action="store_true", help="mixed load with poisoned inputs, --workers 1 and 2"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="--mixed: seconds per run")
    parser.add_argument("--mixed-concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="--mixed: uvicorn workers")
    args = parser.parse_args(argv)
    if args.mixed:
        return mixed(args)

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(_tiny_model(Path(tmp) / "model"))
        video = _tiny_video(Path(tmp) / "v.mp4")
        runs = {}
        for i, precision in enumerate(args.precision):
            runs[precision] = run_precision(
                model, video, precision, args, overload=i == len(args.precision) - 1
            )
    summary: dict = {"model": model if args.model else "tiny-random", "precision": runs}
    summary["device"] = next(iter(runs.values()))["device"]
    summary["bound"] = {p: {n: r[n]["bound"] for n in ("text", "video") if n in r} for p, r in runs.items()}
    if "fp32" in runs and "bf16" in runs:
        summary["bf16_vs_fp32"] = compare(runs)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
