"""The wheel works outside the checkout: build it, install it into a bare folder, run the commands.

The commands run as `python -S TMP/site/bin/egovlp ...` from a folder outside the source tree, with
PYTHONPATH = the installed folder + this venv's site-packages (for the dependencies). `-S` skips the
venv's `.pth` files, so the editable install's import hook, which would quietly serve any module the
wheel lacks from the checkout, is never loaded; each step checks where its files came from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("egovlp", "pretrain", "extract", "serve", "heads", "finetune")
# what a source distribution carries: the build reads nothing else
SOURCES = ("pyproject.toml", "setup.py", "README.md", "configs", *PACKAGES)
TIMEOUT = 300  # seconds per command; each takes a few on an idle machine


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, (
        f"{' '.join(map(str, cmd))}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    )
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wheel")
    assert REPO not in root.resolve().parents, "the test folder must lie outside the checkout"
    # build from a copy: a build in the checkout writes build/ and *.egg-info beside other runs
    src = root / "src"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run(
        [
            *pip,
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(root / "dist"),
            str(src),
        ],
        root,
    )
    (wheel,) = (root / "dist").glob("egovlp-*.whl")
    site = root / "site"
    _run([*pip, "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)], root)
    work = root / "work"
    work.mkdir()
    return {"wheel": wheel, "site": site, "work": work}


def _env(site: Path) -> dict[str, str]:
    deps = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=os.pathsep.join([str(site), *deps]), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _egovlp(installed: dict[str, Path], *args: str) -> subprocess.CompletedProcess:
    script = installed["site"] / "bin" / "egovlp"  # the console script pip wrote from the entry point
    return _run([sys.executable, "-S", str(script), *args], installed["work"], _env(installed["site"]))


def _inside(path: str | Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


def test_wheel_holds_every_module_and_the_configs(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    modules = {
        p.relative_to(REPO).as_posix()
        for pkg in PACKAGES
        for p in (REPO / pkg).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert modules and not modules - names, sorted(modules - names)
    configs = {
        f"egovlp/configs/{p.relative_to(REPO / 'configs').as_posix()}"
        for p in (REPO / "configs").glob("*/*.yaml")
    }
    assert {"egovlp/configs/model/egovlp-base.yaml", "egovlp/configs/pretrain/demo.yaml"} <= configs
    assert not configs - names, sorted(configs - names)
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "configs/", "docs/"))]
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "egovlp = egovlp.cli:main" in zipfile.ZipFile(installed["wheel"]).read(entry_points).decode()


CHECK = """
import contextlib, io, json, runpy, sys
import egovlp, extract, finetune, heads, pretrain, serve
from egovlp.config import CONFIG_KINDS, config_dirs, find_config, list_configs
from egovlp.demo import DEMO_CONFIG

torch = __import__("torch")
torch.manual_seed(0)
cfg = egovlp.ModelConfig(
    video=egovlp.VideoTowerConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_frames=4),
    text=egovlp.TextTowerConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64, max_position_embeddings=64),
    projection_dim=16, name="micro",
)
egovlp.create_model(cfg).save_pretrained(sys.argv[1])
# `python -m egovlp.demo --help` (`make demo` runs the module; the design's CLI has no `egovlp demo`),
# in this process: one torch start-up fewer
sys.argv, demo_help = ["egovlp.demo", "--help"], io.StringIO()
with contextlib.redirect_stdout(demo_help), contextlib.suppress(SystemExit):
    runpy.run_module("egovlp.demo", run_name="__main__")
with torch.device("meta"):  # the named base model, built without allocating its 180M parameters
    base = egovlp.create_model("egovlp-base", device="meta")
print(json.dumps({
    "packages": [m.__file__ for m in (egovlp, extract, finetune, heads, pretrain, serve)],
    "modules": sorted({getattr(m, "__file__", None) or "" for m in list(sys.modules.values())}),
    "config_dirs": [str(d) for d in config_dirs()],
    "configs": {k: [str(find_config(k, n)) for n in list_configs(k)] for k in CONFIG_KINDS},
    "models": egovlp.list_models(),
    "demo": str(find_config("pretrain", DEMO_CONFIG)),
    "base_name": base.cfg.name,
    "demo_help": demo_help.getvalue(),
}))
"""


@pytest.fixture(scope="module")
def checked(installed) -> dict:
    """The installed package imported from outside the checkout; it also saves the micro model."""
    model = installed["work"] / "model"
    cmd = [sys.executable, "-S", "-c", CHECK, str(model)]
    result = _run(cmd, installed["work"], _env(installed["site"]))
    return json.loads(result.stdout.splitlines()[-1]) | {"model": model}


def test_installed_package_imports_finds_its_configs_and_shows_demo_help(installed, checked):
    site = installed["site"]
    assert all(_inside(f, site) for f in checked["packages"]), checked["packages"]
    # nothing from the checkout's sources (the venv with the dependencies lies inside it too)
    sources = tuple(f"{(REPO / name).resolve()}{os.sep}" for name in (*PACKAGES, "configs"))
    assert not [f for f in checked["modules"] if f.startswith(sources)]
    assert checked["config_dirs"] == [str((site / "egovlp" / "configs").resolve())]
    for kind, paths in checked["configs"].items():
        assert paths and all(_inside(p, site) for p in paths), kind
    assert {"egovlp-base", "tiny", "tiny-112"} <= set(checked["models"])
    assert checked["demo"] == str((site / "egovlp" / "configs" / "pretrain" / "demo.yaml").resolve())
    assert checked["base_name"] == "egovlp-base"
    assert (checked["model"] / "model.safetensors").is_file()
    assert "--skip-serve" in checked["demo_help"] and "--steps" in checked["demo_help"]


def test_synth_extract_and_heads_train_from_the_wheel(installed, checked):
    site, work = installed["site"], installed["work"]
    world = work / "world"
    _egovlp(
        installed,
        "synth",
        str(world),
        "--videos",
        "2",
        "--val-videos",
        "1",
        "--short-side",
        "32",
        "--duration",
        "8",
        "--fho-videos",
        "2",
        "--workers",
        "2",
    )
    moments = world / "moments_train.json"
    clips = [c["clip_uid"] for v in json.loads(moments.read_text())["videos"] for c in v["clips"]]
    assert clips

    feats = work / "feats"
    out = _egovlp(
        installed,
        "extract",
        "--model",
        str(checked["model"]),
        "--preset",
        "mq",
        "--input",
        str(moments),
        "--videos",
        str(world / "videos"),
        "--out",
        str(feats),
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-pin-cpus",
        "--no-progress",
    )
    summary = json.loads(out.stdout.splitlines()[-1])
    assert summary["ok"] == len(clips) and summary["failed"] == 0 and summary["precision"] == "fp32"
    for clip in clips:
        sidecar = json.loads((feats / f"{clip}.json").read_text())
        assert sidecar["preset"] == "mq" and sidecar["num_rows"] > 0 and sidecar["dim"] == 16

    run = work / "run"
    out = _egovlp(
        installed,
        "heads",
        "train",
        "mq",
        "--ann",
        str(moments),
        "--features",
        str(feats),
        "--out",
        str(run),
        "--epochs",
        "1",
        "--quiet",
    )
    summary = json.loads(out.stdout.splitlines()[-1])
    packaged = site / "egovlp" / "configs" / "heads" / "mq.yaml"
    # no --config: the packaged default, found inside the installed package
    assert Path(summary["config_file"]).resolve() == packaged.resolve()
    assert json.loads((run / "config.json").read_text())["config_file"] == summary["config_file"]
    assert summary["clips"] == len(clips) and summary["final_loss"] > 0


@pytest.mark.parametrize("image", ["serve", "extract"])
def test_dockerfile_installs_the_wheel_with_every_application(image):
    # `docker` cannot build here; this reads what the build would use
    dockerfile = (REPO / "docker" / f"Dockerfile.{image}").read_text()
    copies = [
        line.split()[1:-1]
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from" not in line
    ]
    copied = {name for names in copies for name in names}
    assert copied == set(SOURCES)  # the wheel stage gets exactly what the wheel is built from
    assert "pip wheel" in dockerfile and "/tmp/dist/egovlp-*.whl" in dockerfile
    assert "COPY --from=wheel /dist/" in dockerfile
    ignore = [
        line
        for line in (REPO / "docker" / f"Dockerfile.{image}.dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    # everything is left out (the .venv, data, outputs) but what the wheel is built from
    assert ignore[0] == "*" and {f"!{name}" for name in SOURCES} <= set(ignore)


def test_compose_builds_both_images():
    import yaml

    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    builds = {name: svc["build"] for name, svc in compose["services"].items()}
    assert set(builds) == {"serve", "serve-cpu", "extract"}
    for build in builds.values():
        assert (REPO / "docker" / build["context"] / build["dockerfile"]).is_file()
