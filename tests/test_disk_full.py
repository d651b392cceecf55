"""A full disk: extraction, text features and `egovlp index` writing into a nearly full tmpfs.

Each run must end by itself (no signal death), in one error line (exit 2) or with the failures in
its manifest (exit 1), and leave no temp file behind; once space is freed, a rerun completes.
Skipped where a tmpfs cannot be mounted (no root, or no CAP_SYS_ADMIN in a container).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import PY, ROOT, extracted_features, micro_model_files, subprocess_env, synthetic_world

TMPFS_SIZE = "3m"
LEAVE_FREE = 2 * 4096  # two pages: the run gets going, then a write fails part-way


def _egovlp(argv: list[str], timeout: float = 300.0) -> subprocess.CompletedProcess:
    # a subprocess: extraction forks its decode workers, and a full disk may end a run by a signal
    return subprocess.run(
        [PY, "-m", "egovlp", *argv],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _mount_tmpfs(mnt: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )


def _unmount(mnt: Path) -> None:
    if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.fixture(scope="module")
def data() -> Iterator[dict[str, Path]]:
    """The shared micro model and world (tests.helpers), once a tmpfs proved mountable: where it is
    not, every test skips before anything is built."""
    with tempfile.TemporaryDirectory(prefix="egovlp-disk-full-") as name:
        tmp = Path(name)
        probe = tmp / "probe"
        probe.mkdir()
        mounted = _mount_tmpfs(probe)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
        _unmount(probe)
        yield {"tmp": tmp, "model": micro_model_files()["model"], "world": synthetic_world()}


@pytest.fixture
def full_disk(data) -> Iterator[Path]:
    """A 3 MiB tmpfs filled up to LEAVE_FREE bytes; unmounted afterwards."""
    mnt = Path(tempfile.mkdtemp(prefix="full-", dir=data["tmp"]))
    mounted = _mount_tmpfs(mnt)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        stat = os.statvfs(mnt)
        with open(mnt / "filler", "wb") as f:
            f.write(b"\0" * (stat.f_bavail * stat.f_frsize - LEAVE_FREE))
        yield mnt
    finally:
        _unmount(mnt)
        shutil.rmtree(mnt, ignore_errors=True)


def _temps(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith(".tmp"))


def _check_failed_cleanly(result: subprocess.CompletedProcess, out: Path, mnt: Path) -> None:
    assert result.returncode >= 0, f"killed by signal {-result.returncode}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode in (1, 2), f"exit {result.returncode} on a full disk\n{result.stderr[-2000:]}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.returncode == 2:  # one line naming what could not be written
        assert lines and lines[-1].startswith("egovlp ") and "space" in lines[-1], result.stderr[-2000:]
    else:  # failed rows in the manifest, or a line saying why the manifest could not be written
        manifest = out / "manifest.parquet"
        if manifest.is_file():
            import pyarrow.parquet as pq

            statuses = pq.read_table(manifest).column("status").to_pylist()
            assert "failed" in statuses, statuses
        else:
            assert any("manifest" in line and "space" in line for line in lines), result.stderr[-2000:]
    assert _temps(mnt) == [], f"temp files left on the full disk: {_temps(mnt)}"


def _rerun_after_freeing(argv: list[str], mnt: Path) -> None:
    (mnt / "filler").unlink()
    result = _egovlp(argv)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _temps(mnt) == []


def _extract_argv(data: dict[str, Path], preset: str, out: Path) -> list[str]:
    world = data["world"]
    source = world / "nlq_train.json" if preset == "text" else world / "videos"
    return [
        *("extract", "--model", str(data["model"]), "--preset", preset, "--input", str(source)),
        *("--out", str(out), "--no-progress", "--no-pin-cpus", "--device", "cpu", "--workers", "1"),
    ]


@pytest.mark.parametrize("preset", ["vq2d", "nlq", "text"])
def test_extract_into_a_full_disk(data, full_disk, preset):
    out = full_disk / preset
    argv = _extract_argv(data, preset, out)
    _check_failed_cleanly(_egovlp(argv), out, full_disk)
    if preset != "text":  # the same writers; one rerun per kind of output is enough
        _rerun_after_freeing(argv, full_disk)


def test_index_into_a_full_disk(data, full_disk):
    features = extracted_features()["features"]  # the same extraction as _extract_argv's nlq one
    out = full_disk / "index"
    argv = ["index", "--features", str(features), "--out", str(out)]
    _check_failed_cleanly(_egovlp(argv), out, full_disk)
    _rerun_after_freeing(argv, full_disk)
