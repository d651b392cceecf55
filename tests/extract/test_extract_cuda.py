"""Extraction on CUDA (skipped without a GPU): fp32 matches the CPU, bf16 stays close; the Ray engine
puts its replica on the GPU."""

from __future__ import annotations

import pytest
import torch

from extract.cli import main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _extract(model_dir, videos, out, *extra) -> int:
    args = ["--model", model_dir, "--preset", "nlq", "--input", videos, "--out", out, "--no-progress", *extra]
    return main([str(a) for a in args])


def test_cuda_fp32_matches_cpu_and_bf16_is_close(tmp_path, index_videos, micro_model_dir):
    assert _extract(micro_model_dir, index_videos, tmp_path / "cpu", "--device", "cpu", "--workers", "0") == 0
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        assert _extract(micro_model_dir, index_videos, out, "--device", "cuda", "--precision", precision) == 0
    for name in ("vid30", "vid25"):
        cpu = torch.load(tmp_path / "cpu" / f"{name}.pt", weights_only=True)
        fp32 = torch.load(tmp_path / "fp32" / f"{name}.pt", weights_only=True)
        bf16 = torch.load(tmp_path / "bf16" / f"{name}.pt", weights_only=True)
        torch.testing.assert_close(fp32, cpu, atol=1e-3, rtol=1e-3)
        assert torch.nn.functional.cosine_similarity(bf16, cpu, dim=1).min() > 0.98


def test_cuda_ray_replica_on_the_gpu(tmp_path, index_videos, micro_model_dir):
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=2, num_gpus=1, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False
    )
    try:
        ray_args = ("--engine", "ray", "--workers", "1", "--precision", "fp32")
        code = _extract(micro_model_dir, index_videos, tmp_path / "ray", *ray_args)
    finally:
        ray.shutdown()
    assert code == 0
    local_args = ("--device", "cuda", "--precision", "fp32")
    assert _extract(micro_model_dir, index_videos, tmp_path / "local", *local_args) == 0
    for name in ("vid30", "vid25"):
        a = torch.load(tmp_path / "ray" / f"{name}.pt", weights_only=True)
        b = torch.load(tmp_path / "local" / f"{name}.pt", weights_only=True)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
