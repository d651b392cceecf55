"""Bad inputs to `egovlp heads` and `egovlp eval` (issue 13): one line naming the input, exit 2, no
traceback, and nothing written."""

from __future__ import annotations

import json

import pytest
from test_head_data import make_mq_world, make_nlq_world, one_thread

from egovlp.cli import run

pytestmark = pytest.mark.usefixtures("one_thread")
_ = one_thread


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    nlq = make_nlq_world(root / "nlq", clips=2, rows=24)
    mq = make_mq_world(root / "mq", clips=2, rows=32)
    (root / "a_file").write_text("x")
    (root / "epochs0.yaml").write_text("epochs: 0\n")
    (root / "scalar.yaml").write_text("42\n")
    (root / "typo.yaml").write_text("hiden: 64\n")
    (root / "heads.yaml").write_text("hidden: 30\nnum_heads: 4\n")
    (root / "ranges.yaml").write_text("levels: 2\n")
    tiny = root / "tiny.yaml"
    tiny.write_text("hidden: 16\nnum_heads: 2\nlevels: 2\nregression_ranges: [[0, 4], [4, 1000]]\n")
    ckpt = root / "run"
    rc = run(
        [
            "heads",
            "train",
            "mq",
            "--ann",
            str(mq["ann"]),
            "--features",
            str(mq["features"]),
            "--out",
            str(ckpt),
            "--config",
            str(tiny),
            "--epochs",
            "1",
            "--threads",
            "1",
            "--quiet",
        ]
    )
    assert rc == 0
    return {"root": root, "nlq": nlq, "mq": mq, "ckpt": ckpt}


def _nlq(w, *extra: str) -> list[str]:
    n = w["nlq"]
    return [
        "heads",
        "train",
        "nlq",
        "--ann",
        str(n["ann"]),
        "--features",
        str(n["features"]),
        "--text-features",
        str(n["text"]),
        "--quiet",
        *extra,
    ]


def _nlq_with(*extra: str):
    """A case: NLQ training into the case's folder with `extra` options."""
    return lambda w, out: _nlq(w, "--out", out, *extra)


def _nlq_config(name: str):
    """A case: NLQ training with the config file `name` from the world's folder."""
    return lambda w, out: _nlq(w, "--out", out, "--config", str(w["root"] / name))


def _mq_predict(w, *extra: str) -> list[str]:
    m = w["mq"]
    return [
        "heads",
        "predict",
        "mq",
        "--ann",
        str(m["ann"]),
        "--features",
        str(m["features"]),
        "--quiet",
        *extra,
    ]


CASES = {
    "batch size -1": (_nlq_with("--batch-size", "-1"), "--batch-size"),
    "epochs 0": (_nlq_with("--epochs", "0"), "--epochs"),
    "lr -1": (_nlq_with("--lr", "-1"), "--lr"),
    "seed -1": (_nlq_with("--seed", "-1"), "--seed"),
    "threads 0": (_nlq_with("--threads", "0"), "--threads"),
    "device bogus": (_nlq_with("--device", "bogus"), "--device"),
    "out is a file": (lambda w, out: _nlq(w, "--out", str(w["root"] / "a_file")), "a_file"),
    "yaml epochs 0": (_nlq_config("epochs0.yaml"), "'epochs'"),
    "yaml scalar": (_nlq_config("scalar.yaml"), "scalar.yaml"),
    "yaml typo": (_nlq_config("typo.yaml"), "'hiden'"),
    "yaml heads": (_nlq_config("heads.yaml"), "num_heads"),
    "missing config": (_nlq_config("nope.yaml"), "nope.yaml"),
    "mq ranges": (
        lambda w, out: [
            "heads",
            "train",
            "mq",
            "--ann",
            str(w["mq"]["ann"]),
            "--features",
            str(w["mq"]["features"]),
            "--out",
            out,
            "--config",
            str(w["root"] / "ranges.yaml"),
        ],
        "regression_ranges",
    ),
    "vq2d refine -1": (
        lambda w, out: [
            "heads",
            "train",
            "vq2d",
            "--ann",
            "x",
            "--features",
            "y",
            "--out",
            out,
            "--refine-stages",
            "-1",
        ],
        "--refine-stages",
    ),
    "predict out under a file": (
        lambda w, out: _mq_predict(
            w, "--checkpoint", str(w["ckpt"]), "--out", str(w["root"] / "a_file" / "p.json")
        ),
        "a_file",
    ),
    "predict out is a folder": (
        lambda w, out: _mq_predict(w, "--checkpoint", str(w["ckpt"]), "--out", str(w["root"])),
        "is a folder",
    ),
    "predict wrong checkpoint": (
        lambda w, out: _mq_predict(w, "--checkpoint", str(w["nlq"]["text"]), "--out", out + ".json"),
        "text_cls.pt",
    ),
    "predict missing checkpoint": (
        lambda w, out: _mq_predict(w, "--checkpoint", str(w["root"] / "none.pt"), "--out", out + ".json"),
        "none.pt",
    ),
    "eval out under a file": (
        lambda w, out: [
            "eval",
            "mq",
            "--gt",
            str(w["mq"]["ann"]),
            "--pred",
            str(w["mq"]["ann"]),
            "--out",
            str(w["root"] / "a_file" / "m.json"),
        ],
        "a_file",
    ),
}


def _exit_code(argv: list[str]) -> int:
    """`egovlp ARGV` in this process: argparse's own errors leave by SystemExit(2) (one usage line)."""
    try:
        return run(argv)
    except SystemExit as done:
        return int(done.code)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2(world, tmp_path, capsys, case):
    argv, named = CASES[case]
    out = str(tmp_path / "out")
    assert _exit_code(argv(world, out)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert named in captured.err
    # nothing was trained or predicted
    assert not (tmp_path / "out" / "final").exists() and not (tmp_path / "out.json").exists()


def test_good_predict_still_works(world, tmp_path, capsys):
    out = tmp_path / "p.json"
    assert run(_mq_predict(world, "--checkpoint", str(world["ckpt"]), "--out", str(out))) == 0
    assert json.loads(capsys.readouterr().out)["clips"] == 2 and out.is_file()
