"""Decoder backends compared on the same videos, in one run: speed, frame exactness, memory.

    python benchmarks/bench_decode.py                 # 3 synthetic 40 s videos (340x256, 30 fps, GOP 60)
    python benchmarks/bench_decode.py --videos DIR --reads 2000 --out decode.json

For each installed backend (`egovlp.video.available_backends()`, each in its own process so memory
is its own):
- window reads: every file read as `egovlp extract` reads it (the 1.875 rows/s grid, 4 frames per
  row, chunks of 64 rows through `read_frames`): frames delivered per second;
- exactness: frames at sampled indices (`read_frames`) and times (`read_frames_at`) against a
  reference decode (PyAV, every frame in order): identical bytes, max abs difference, and how many
  came from a neighbouring frame instead (an index or time mapping off by one);
- `--nvdec`: torchcodec decoding on CUDA (window reads, and the max difference to the reference);
- memory: RSS growth (MiB) over `--reads` random-access reads (4 frames of a random 1-8 s clip of a
  random file, the pretraining loader's access), after 100 warm-up reads; and reads per second.
Prints one JSON object (also written to --out).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from egovlp import video as V  # noqa: E402


def make_videos(folder: Path, count: int, seconds: float) -> list[Path]:
    """Textured, moving 340x256 H.264 videos (every frame differs from its neighbours)."""
    import av

    paths = []
    h, w = 256, 340
    yy, xx = np.mgrid[0:h, 0:w]
    for n in range(count):
        path = folder / f"bench{n}.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=30, options={"crf": "20", "g": "60", "bf": "2"})
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for i in range(int(seconds * 30)):
                img = np.empty((h, w, 3), np.uint8)
                img[..., 0] = (xx * 2 + i * 3 + n * 40) % 256
                img[..., 1] = (yy * 3 + i * 5) % 256
                img[..., 2] = ((xx + yy) // 4 + i * 7) % 256
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        paths.append(path)
    return paths


def reference(path: Path, keep: set[int]) -> dict[int, np.ndarray]:
    """Every frame decoded in order by PyAV; the ones in `keep` returned."""
    import av

    out = {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in keep:
                out[i] = frame.to_ndarray(format="rgb24")
    return out


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def window_reads(paths: list[Path]) -> dict:
    from extract.sampling import window_plan

    frames, video_seconds, t0 = 0, 0.0, time.perf_counter()
    for path in paths:
        info = V.video_info(path)
        video_seconds += info.num_frames / info.fps
        plan = window_plan(0.0, info.num_frames / info.fps, info.fps, info.num_frames)
        for r0 in range(0, plan.num_rows, 64):
            got = V.read_frames(path, plan.indices[r0 : r0 + 64].reshape(-1).tolist())
            frames += len(got)
    seconds = time.perf_counter() - t0
    return {
        "frames": frames,
        "seconds": round(seconds, 3),
        "frames_per_s": round(frames / seconds, 1),
        "x_realtime": round(video_seconds / seconds, 1),
    }


def exactness(paths: list[Path], samples: int, seed: int) -> dict:
    rng = random.Random(seed)
    same = total = neighbour = 0
    max_diff = 0
    for path in paths:
        info = V.video_info(path)
        idx = sorted(rng.sample(range(2, info.num_frames - 2), samples))
        times = [rng.uniform(0, info.num_frames / info.fps - 0.1) for _ in range(samples)]
        t_idx = [V.frame_index(t, info.fps, info.num_frames) for t in times]
        keep = {j + d for j in idx + t_idx for d in range(-2, 3)}
        ref = reference(path, keep)
        for want, got in ((idx, V.read_frames(path, idx)), (t_idx, V.read_frames_at(path, times))):
            for i, frame in zip(want, got, strict=True):
                total += 1
                diff = int(np.abs(frame.astype(np.int16) - ref[i].astype(np.int16)).max())
                same += diff == 0
                max_diff = max(max_diff, diff)
                errors = {
                    d: float(np.abs(frame.astype(np.float32) - ref[i + d]).mean())
                    for d in range(-2, 3)
                    if i + d in ref
                }
                neighbour += min(errors, key=errors.get) != 0
    return {"frames": total, "identical": same, "max_abs_diff": max_diff, "from_a_neighbour": neighbour}


def random_reads(paths: list[Path], reads: int, seed: int) -> dict:
    rng = random.Random(seed)
    infos = [V.video_info(p) for p in paths]

    def one() -> None:
        k = rng.randrange(len(paths))
        length = rng.uniform(1.0, 8.0)
        start = rng.uniform(0, infos[k].duration - length)
        V.read_frames_at(paths[k], V.clip_sample_times(start, start + length, 4))

    for _ in range(100):
        one()
    before, t0 = rss_mib(), time.perf_counter()
    for _ in range(reads):
        one()
    seconds = time.perf_counter() - t0
    return {
        "reads": reads,
        "reads_per_s": round(reads / seconds, 1),
        "rss_start_mib": round(before, 1),
        "rss_growth_mib": round(rss_mib() - before, 1),
    }


def nvdec(paths: list[Path], samples: int) -> dict:
    """torchcodec on CUDA (NVDEC): window reads as above, and the max difference to the reference."""
    import torch
    from torchcodec.decoders import VideoDecoder

    from extract.sampling import window_plan

    if not torch.cuda.is_available():
        return {"backend": "nvdec", "error": "no CUDA device"}
    frames, video_seconds, t0 = 0, 0.0, time.perf_counter()
    for path in paths:
        decoder = VideoDecoder(str(path), device="cuda", seek_mode="exact")
        meta = decoder.metadata
        video_seconds += meta.num_frames / meta.average_fps
        plan = window_plan(0.0, meta.num_frames / meta.average_fps, meta.average_fps, meta.num_frames)
        for r0 in range(0, plan.num_rows, 64):
            frames += len(decoder.get_frames_at(plan.indices[r0 : r0 + 64].reshape(-1).tolist()).data)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    idx = list(range(2, 2 + samples))
    ref = reference(paths[0], set(idx))
    got = VideoDecoder(str(paths[0]), device="cuda").get_frames_at(idx).data.permute(0, 2, 3, 1).cpu().numpy()
    diff = max(
        int(np.abs(g.astype(np.int16) - ref[i].astype(np.int16)).max()) for i, g in zip(idx, got, strict=True)
    )
    return {
        "backend": "nvdec",
        "window": {
            "frames": frames,
            "seconds": round(seconds, 3),
            "frames_per_s": round(frames / seconds, 1),
            "x_realtime": round(video_seconds / seconds, 1),
        },
        "exactness": {"frames": len(idx), "max_abs_diff": diff},
    }


def worker(backend: str, paths: list[Path], reads: int, samples: int) -> dict:
    if backend == "nvdec":
        return nvdec(paths, samples)
    os.environ[V.BACKEND_ENV] = backend
    problem = V.check_backend(backend)
    if problem:
        return {"backend": backend, "error": problem}
    return {
        "backend": backend,
        "window": window_reads(paths),
        "exactness": exactness(paths, samples, seed=1),
        "random": random_reads(paths, reads, seed=2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", default=None, help="folder of .mp4 files (default: synthesize)")
    p.add_argument("--count", type=int, default=3, help="synthetic videos")
    p.add_argument("--seconds", type=float, default=40.0, help="length of each synthetic video")
    p.add_argument("--reads", type=int, default=2000, help="random-access reads for the memory check")
    p.add_argument("--samples", type=int, default=40, help="sampled indices and times per file (exactness)")
    p.add_argument("--backends", default=None, help="comma list (default: every installed backend)")
    p.add_argument("--nvdec", action="store_true", help="also torchcodec on CUDA (NVDEC), when it loads")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        paths = [Path(x) for x in args.videos.split(os.pathsep)]
        print(json.dumps(worker(args.worker, paths, args.reads, args.samples)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        if args.videos:
            paths = sorted(Path(args.videos).glob("*.mp4"))
        else:
            paths = make_videos(Path(tmp), args.count, args.seconds)
        backends = args.backends.split(",") if args.backends else V.available_backends()
        if args.nvdec:
            backends.append("nvdec")
        results = []
        for name in backends:
            cmd = [sys.executable, __file__, "--worker", name]
            cmd += ["--videos", os.pathsep.join(map(str, paths))]
            cmd += ["--reads", str(args.reads), "--samples", str(args.samples)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                results.append({"backend": name, "error": done.stderr.strip().splitlines()[-1:]})
            else:
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), file=sys.stderr)
    summary = {
        "videos": [str(p.name) for p in paths]
        if args.videos
        else f"{args.count} synthetic x {args.seconds:g} s",
        "default_order": list(V.DEFAULT_ORDER),
        "results": results,
    }
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
