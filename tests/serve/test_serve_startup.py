"""`egovlp serve` refuses a broken setup before uvicorn starts: one line on stderr, exit 2."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from egovlp.cli import run
from egovlp.errors import InputError


def _exit_code(argv: list[str]) -> int:
    """What `egovlp ARGV` exits with (argparse errors leave through SystemExit)."""
    try:
        return run(argv)
    except SystemExit as stop:
        return int(stop.code)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def broken(tmp_path_factory, model_dir, index_dir):
    """name -> argv of one broken setup (built once for the module)."""
    root = tmp_path_factory.mktemp("broken")
    rand = root / "random.pth"
    rand.write_bytes(os.urandom(4096))
    no_config = _copy(model_dir, root / "no_config")
    (no_config / "config.json").unlink()
    bad_config = _copy(model_dir, root / "bad_config")
    (bad_config / "config.json").write_text("{not json")
    empty_index = root / "empty_index"
    empty_index.mkdir()
    corrupt_index = _copy(index_dir, root / "corrupt_index")
    (corrupt_index / "index.faiss").write_bytes(os.urandom(1000))
    bad_json_index = _copy(index_dir, root / "bad_json_index")
    (bad_json_index / "index.json").write_text("{")
    foreign = _copy(index_dir, root / "foreign")
    info = json.loads((foreign / "index.json").read_text())
    (foreign / "index.json").write_text(json.dumps(info | {"weights_hash": "0123456789abcdef"}))
    m, i = str(model_dir), str(index_dir)
    return {
        "random-bytes model": (["--model", str(rand)], "random.pth"),
        "model without config": (["--model", str(no_config)], "no_config"),
        "model with corrupt config": (["--model", str(bad_config)], "bad_config"),
        "empty index": (["--model", m, "--index", str(empty_index)], "empty_index"),
        "corrupt index": (["--model", m, "--index", str(corrupt_index)], "index.faiss"),
        "bad-JSON index": (["--model", m, "--index", str(bad_json_index)], "index.json"),
        "index from other weights": (["--model", m, "--index", str(foreign)], "allow-foreign-index"),
        "missing index": (["--model", m, "--index", str(root / "nope")], "--index"),
        "bogus device": (["--model", m, "--index", i, "--device", "bogus"], "--device"),
        "max-batch 0": (["--model", m, "--max-batch", "0"], "--max-batch"),
        "port 99999": (["--model", m, "--port", "99999"], "--port"),
        "bogus log level": (["--model", m, "--log-level", "bogus"], "--log-level"),
        "negative decode timeout": (["--model", m, "--decode-timeout", "-1"], "--decode-timeout"),
        "fp16 on the CPU": (["--model", m, "--device", "cpu", "--precision", "fp16"], "--precision"),
        "bogus precision": (["--model", m, "--precision", "fp8"], "--precision"),
        "zero decode bytes": (["--model", m, "--max-decode-mb", "0"], "--max-decode-mb"),
    }


CASES = [
    "random-bytes model",
    "model without config",
    "model with corrupt config",
    "empty index",
    "corrupt index",
    "bad-JSON index",
    "index from other weights",
    "missing index",
    "bogus device",
    "max-batch 0",
    "port 99999",
    "bogus log level",
    "negative decode timeout",
    "fp16 on the CPU",
    "bogus precision",
    "zero decode bytes",
]


@pytest.mark.parametrize("case", CASES)
def test_serve_refuses_broken_setup(case, broken, capsys, monkeypatch):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("uvicorn started on a broken setup"))
    argv, names = broken[case]
    assert _exit_code(["serve", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert names in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_serve_refuses_cuda_without_gpu(model_dir, capsys):
    assert _exit_code(["serve", "--model", str(model_dir), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CUDA is not available" in err


def test_foreign_index_needs_the_flag(broken, model_dir):
    from serve.backend import load_backend

    foreign = broken["index from other weights"][0][3]
    with pytest.raises(InputError, match="other weights"):
        load_backend(str(model_dir), foreign, "cpu")
    backend = load_backend(str(model_dir), foreign, "cpu", allow_foreign_index=True)
    assert backend.index is not None and len(backend.index) == 21


def test_good_setup_reaches_uvicorn(model_dir, index_dir, monkeypatch):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    assert run(["serve", "--model", str(model_dir), "--index", str(index_dir), "--port", "8123"]) == 0
    assert seen["port"] == 8123 and seen["app"].state.egovlp.backend_ is not None  # loaded before start


def test_bf16_on_the_cpu_from_the_command_line(model_dir, monkeypatch):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app))
    assert run(["serve", "--model", str(model_dir), "--device", "cpu", "--precision", "bf16"]) == 0
    state = seen["app"].state.egovlp
    assert state.settings.precision == "bf16" and state.backend_.precision == "bf16"
    assert state.backend_.model.dtype == torch.bfloat16  # cast, not forced back to fp32


def test_limit_flags_come_from_service_limits():
    from serve.cli import parser, settings_from
    from serve.settings import MIB, ServiceLimits

    assert settings_from(parser().parse_args(["--model", "m"])).limits() == ServiceLimits().limits()
    help_text = " ".join(parser().format_help().split())
    for info in ServiceLimits.model_fields.values():
        assert " ".join(info.description.split()) in help_text, info.description
    argv = ["--model", "m", "--max-batch", "64", "--max-body-mb", "2", "--max-queue-items", "7"]
    s = settings_from(parser().parse_args(argv))
    assert (s.max_batch_text, s.max_batch_video, s.max_body_bytes, s.max_queue_items) == (64, 16, 2 * MIB, 7)
    s = settings_from(parser().parse_args([*argv, "--max-batch-video", "3"]))
    assert s.max_batch_video == 3
