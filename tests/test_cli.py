"""The `egovlp` dispatcher and the library commands: JSON on stdout, exit code 2 on bad input.

Commands run in-process through `tests.helpers.run_egovlp` (output captured, process state put
back); `python -m egovlp` runs as a subprocess only where the console script or a closed pipe is
what is tested. The micro model is the shared one (`tests.helpers.micro_model_files`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tests.conftest import micro_config
from tests.helpers import ROOT, micro_model_files, run_egovlp


def write_mp4(path: Path, seconds: float = 2.0, fps: int = 30, size: tuple[int, int] = (64, 48)) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(int(seconds * fps)):
            img = np.full((size[1], size[0], 3), (i * 4) % 255, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_embed_text_and_video(tmp_path):
    model = micro_model_files()["model"]
    result = run_egovlp(["embed", "--model", str(model), "--text", "C opens the fridge", "--text", "a cup"])
    assert result.code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["dim"] == 16 and [d["text"] for d in out["data"]] == ["C opens the fridge", "a cup"]
    import egovlp

    reference = egovlp.load_model(model)
    torch.testing.assert_close(
        torch.tensor(out["data"][0]["embedding"]), reference.encode_text(["C opens the fridge"])[0]
    )

    video = write_mp4(tmp_path / "clip.mp4")
    clip = ["--video", str(video), "--start", "0.5", "--end", "1.5", "--normalize"]
    result = run_egovlp(["embed", "--model", str(model), *clip])
    assert result.code == 0, result.stderr
    out = json.loads(result.stdout)
    vec = torch.tensor(out["data"][0]["embedding"])
    assert vec.shape == (16,) and abs(vec.norm().item() - 1) < 1e-5


def test_bad_inputs_exit_2_with_one_line(tmp_path):
    model = micro_model_files()["model"]
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    cases = [
        ["embed", "--model", str(tmp_path / "nope"), "--text", "x"],
        ["embed", "--model", str(model), "--video", str(empty)],
        ["embed", "--model", str(model), "--video", str(tmp_path / "missing.mp4")],
        ["embed", "--model", str(model), "--video", str(write_mp4(tmp_path / "v.mp4")), "--start", "5"],
        ["convert", str(tmp_path / "nope.pth"), str(tmp_path / "out")],
    ]
    for argv in cases:
        result = run_egovlp(argv)
        assert result.code == 2, (argv, result.stderr)
        err = result.stderr.strip()
        assert err.count("\n") == 0 and "Traceback" not in err and err.startswith("egovlp "), err


def test_convert_command_and_console_script(tmp_path):
    files = micro_model_files()
    console = [sys.executable, "-m", "egovlp"]
    convert = [
        *console,
        "convert",
        str(files["pth"]),
        str(tmp_path / "conv"),
        "--config",
        str(files["micro_yaml"]),
    ]
    # both at once: each is mostly interpreter start-up
    jobs = [
        subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for argv in (convert, [*console, "nonsense"])
    ]
    (out, err), (_, bad_err) = (job.communicate(timeout=300) for job in jobs)
    assert jobs[0].returncode == 0, err
    assert json.loads(out)["config_hash"] == micro_config().config_hash()
    assert (tmp_path / "conv" / "model.safetensors").is_file()
    # published files get the umask's mode (mkstemp's 0600 must not leak through the rename)
    from egovlp.io import file_mode

    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "conv" / name).stat().st_mode & 0o777 == file_mode(), name
    assert jobs[1].returncode == 2 and "unknown command 'nonsense'" in bad_err, bad_err


def test_embed_into_a_closed_pipe_exits_quietly(tmp_path):
    """`egovlp embed ... | head -c 20`: the reader leaves early; no BrokenPipeError traceback."""
    model = micro_model_files()["model"]
    texts = [
        a for i in range(400) for a in ("--text", f"text number {i}")
    ]  # ~130 KB of JSON: > a pipe buffer
    proc = subprocess.Popen(
        [sys.executable, "-m", "egovlp", "embed", "--model", str(model), *texts],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.read(20).startswith(b'{"model"')
    proc.stdout.close()  # like `head` exiting
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, stderr  # the shell's code for a SIGPIPE end
    assert stderr.strip() == "", stderr


def _raise_disk_full(argv):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device", "/data/out/features.pt")


def _raise_bug(argv):
    raise OSError(22, "Invalid argument")  # no path, not a disk error: a bug keeps its traceback


def test_write_errors_and_argparse_errors_are_one_line(monkeypatch):
    from egovlp import cli

    monkeypatch.setitem(cli.COMMANDS, "diskfull", ("tests.test_cli:_raise_disk_full", "test"))
    monkeypatch.setitem(cli.COMMANDS, "bug", ("tests.test_cli:_raise_bug", "test"))
    result = run_egovlp(["diskfull"])
    assert result.code == 2
    assert (
        result.stderr
        == "egovlp diskfull: error: /data/out/features.pt: cannot write (no space left on the device)\n"
    )
    with pytest.raises(OSError, match="Invalid argument"):
        run_egovlp(["bug"])
    result = run_egovlp(["synth", "out", "--videos", "0"])  # argparse: one line naming the flag, no usage
    assert result.code == 2
    err = result.stderr
    assert err.count("\n") == 1 and "argument --videos: must be a positive integer, got 0" in err


def test_validate_numbers_devices_and_paths(tmp_path):
    import argparse
    import errno

    from egovlp import validate as V
    from egovlp.errors import InputError

    assert V.positive_int("3") == 3 and V.non_negative_int("0") == 0 and V.positive_float("1e-4") == 1e-4
    for func, text in [
        (V.positive_int, "0"),
        (V.positive_int, "2.5"),
        (V.non_negative_int, "-1"),
        (V.positive_float, "-1"),
        (V.positive_float, "nan"),
        (V.non_negative_float, "inf"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError):
            func(text)
    assert V.resolve_device("cpu") == torch.device("cpu")
    assert V.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="bogus.*not a device"):
        V.resolve_device("bogus")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            V.resolve_device("cuda:0")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert V.output_dir(tmp_path / "new" / "deep", "--out").is_dir()
    assert V.output_file(tmp_path / "new2" / "m.json", "--out").parent.is_dir()
    # conditions that hold for root as well: a regular file where a folder is meant
    for call, message in [
        (lambda: V.output_dir(a_file, "--out"), "is a file"),
        (lambda: V.output_dir(a_file / "sub", "--out"), "is a file, cannot create"),
        (lambda: V.output_file(a_file / "m.json", "--out"), "is a file, cannot create"),
        (lambda: V.output_file(tmp_path, "--out"), "is a folder"),
        (lambda: V.input_file(tmp_path / "missing.yaml", "--config"), "not found"),
        (lambda: V.input_file(tmp_path, "--config"), "is a folder"),
        (lambda: V.input_dir(a_file, "--videos"), "is a file"),
    ]:
        with pytest.raises(InputError, match=message):
            call()
    err = V.write_error("/data/x.h5", OSError(errno.ENOSPC, "No space left on device"))
    assert (
        isinstance(err, InputError) and str(err) == "/data/x.h5: cannot write (no space left on the device)"
    )
    assert "read-only" in str(V.write_error("/ro/x", OSError(errno.EROFS, "Read-only file system")))
