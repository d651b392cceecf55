"""EgoMask's own file layout (docs/design.md D) and COCO run-length encoding, both ways.

Ground truth, a folder:
- `meta_expressions.json`: `{"videos": {VIDEO: {"frames": [FRAME, ...], "expressions": {EXP_ID:
  {"exp": TEXT, "obj_id": OBJ_ID}}}}}`;
- `meta.json`: `{"videos": {VIDEO: {"subset": "short"|"medium"|"long", "objects": {OBJ_ID:
  {"category": NAME, "frames": [FRAME, ...]}}}}}`;
- `annotations/{VIDEO}/{OBJ_ID}.json`: `{FRAME: RLE or null}` (null: the object is absent);
- `subset/{short,medium,long}/meta_expressions.json` (and `meta.json`): the same records, per subset.

Predictions, a folder: `{SUBSET}/{VIDEO}/{EXP_ID}/{EXP_ID}-{OBJ_ID}.json` = `{FRAME: RLE}` for the
frames where the object is predicted (a frame left out or null predicts nothing). EgoMask's scripts
name the subset folder `short`, `mid` or `long` for a per-subset run and `full` for all videos at
once; all of these, the ground truth's own subset name and no subset folder at all are looked up.

An RLE is `{"size": [h, w], "counts": STR | [int, ...]}`: runs over the column-major pixels, starting
with a run of 0s; `counts` is the list of runs or COCO's compact string (each run as 5-bit groups
offset by 48, 0x20 = another group follows, the last group's 0x10 = negative; runs after the second
stored as the difference from the run two before).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from egovlp.io import write_json_atomic
from egovlp.metrics.io import Loc, as_dict, as_int, as_list, as_str, get, load_json

SUBSETS = ("short", "medium", "long")
# prediction folder names EgoMask's scripts use besides the subset's own name
SUBSET_FOLDER_ALIASES = {"medium": ("mid",), "short": (), "long": ()}
FULL_FOLDER = "full"


# ---- COCO RLE ----------------------------------------------------------------------------------------


def rle_runs(mask: np.ndarray) -> list[int]:
    """Run lengths of a 2-D bool mask over its column-major pixels, starting with a (maybe empty) 0-run."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)  # column-major order
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def runs_to_string(runs: list[int]) -> str:
    """COCO's compact counts string of a run list (the inverse of `string_to_runs`)."""
    out = []
    for i, run in enumerate(runs):
        x = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift: a negative difference ends at -1
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr(48 + (c | 0x20 if more else c)))
    return "".join(out)


def string_to_runs(text: str, loc: Loc) -> list[int]:
    """Decode COCO's compact counts string (see the module docstring)."""
    runs: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text):
                raise loc.error("truncated compressed RLE string")
            c = ord(text[pos]) - 48
            if not 0 <= c < 64:
                raise loc.error(f"invalid character {text[pos]!r} in compressed RLE string")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                value -= 1 << shift  # sign bit of the last group
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """A 2-D mask [H, W] -> `{"size": [H, W], "counts": STR}` (COCO's compressed form, as pycocotools writes)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": runs_to_string(rle_runs(mask))}


def decode_rle(rle: Any, loc: Loc) -> np.ndarray:
    """`{"size": [h, w], "counts": STR | [int]}` -> bool mask [h, w]; a malformed RLE is an InputError at loc."""
    rle = as_dict(rle, loc)
    size, sloc = get(rle, "size", loc)
    size = as_list(size, sloc)
    if len(size) != 2:
        raise sloc.error("expected [height, width]")
    h, w = as_int(size[0], sloc.index(0)), as_int(size[1], sloc.index(1))
    counts, cloc = get(rle, "counts", loc)
    if isinstance(counts, str):
        runs = string_to_runs(counts, cloc)
    else:
        runs = [as_int(c, cloc.index(i)) for i, c in enumerate(as_list(counts, cloc))]
    if any(r < 0 for r in runs) or sum(runs) != h * w:
        raise cloc.error(f"runs must be non-negative and sum to height x width = {h * w}")
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)  # odd runs are foreground
    return flat.reshape((w, h)).T  # column-major: [H, W]


def mask_box(mask: np.ndarray) -> list[int] | None:
    """[x1, y1, x2, y2] (pixel edges, x2/y2 exclusive) around a mask's pixels, or None when it is empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


# ---- the ground truth ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    video: str
    exp_id: str
    obj_id: str
    text: str
    subset: str
    frames: tuple[str, ...]  # the frames scored: meta_expressions' list for the video


def read_ground_truth(root: str | Path) -> list[Expression]:
    """Every expression of an EgoMask ground-truth folder, with its video's subset and frames."""
    root = Path(root)
    if not root.is_dir():
        raise Loc(str(root)).error("not a folder (expected an EgoMask ground-truth folder)")
    mpath, epath = root / "meta.json", root / "meta_expressions.json"
    meta_videos, mloc = get(as_dict(load_json(mpath), Loc(str(mpath))), "videos", Loc(str(mpath)))
    exp_videos, eloc = get(as_dict(load_json(epath), Loc(str(epath))), "videos", Loc(str(epath)))
    meta_videos, exp_videos = as_dict(meta_videos, mloc), as_dict(exp_videos, eloc)
    folder_subsets = _subset_folders(root)
    out: list[Expression] = []
    for video, record in exp_videos.items():
        vloc = eloc.key(video)
        record = as_dict(record, vloc)
        frames_raw, floc = get(record, "frames", vloc)
        frames = tuple(as_str(f, floc.index(i)) for i, f in enumerate(as_list(frames_raw, floc)))
        if not frames:
            raise floc.error("a video needs at least one frame")
        subset = _subset_of(video, meta_videos, mloc, folder_subsets)
        exps, xloc = get(record, "expressions", vloc)
        for exp_id, exp in as_dict(exps, xloc).items():
            loc = xloc.key(exp_id)
            text, tloc = get(as_dict(exp, loc), "exp", loc)
            obj, oloc = get(exp, "obj_id", loc)
            obj_id = str(as_int(obj, oloc)) if isinstance(obj, int) else as_str(obj, oloc)
            out.append(Expression(video, str(exp_id), obj_id, as_str(text, tloc), subset, frames))
    if not out:
        raise eloc.error("no expressions to score")
    return out


def _subset_folders(root: Path) -> dict[str, str]:
    """video -> subset from `subset/{name}/meta_expressions.json`, where those files exist."""
    found: dict[str, str] = {}
    for name in SUBSETS:
        path = root / "subset" / name / "meta_expressions.json"
        if path.is_file():
            videos, loc = get(as_dict(load_json(path), Loc(str(path))), "videos", Loc(str(path)))
            for video in as_dict(videos, loc):
                found[video] = name
    return found


def _subset_of(video: str, meta_videos: dict, mloc: Loc, folders: dict[str, str]) -> str:
    if video in meta_videos:
        record = as_dict(meta_videos[video], mloc.key(video))
        if "subset" in record:
            subset = as_str(record["subset"], mloc.key(video).key("subset"))
            if subset not in SUBSETS:
                raise mloc.key(video).key("subset").error(f"{subset!r} is not one of {', '.join(SUBSETS)}")
            return subset
    if video in folders:
        return folders[video]
    raise mloc.key(video).error("no subset for this video (neither meta.json nor subset/*/ names it)")


def read_annotation(root: str | Path, video: str, obj_id: str) -> dict[str, Any]:
    """`annotations/{video}/{obj_id}.json`: frame -> RLE or None (raw, decoded by the caller)."""
    path = Path(root) / "annotations" / video / f"{obj_id}.json"
    return as_dict(load_json(path), Loc(str(path)))


def prediction_path(pred_root: str | Path, e: Expression) -> Path | None:
    """The prediction file of an expression under any of the subset folder names, or None."""
    root = Path(pred_root)
    name = Path(e.video) / e.exp_id / f"{e.exp_id}-{e.obj_id}.json"
    for folder in (e.subset, *SUBSET_FOLDER_ALIASES[e.subset], FULL_FOLDER, ""):
        path = root / folder / name
        if path.is_file():
            return path
    return None


def write_prediction(pred_root: str | Path, e: Expression, masks: dict[str, np.ndarray]) -> Path:
    """Write `{subset}/{video}/{exp_id}/{exp_id}-{obj_id}.json` with the non-empty masks as RLE."""
    path = Path(pred_root) / e.subset / e.video / e.exp_id / f"{e.exp_id}-{e.obj_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic({f: encode_rle(m) for f, m in masks.items() if np.any(m)}, path)
    return path


def write_ground_truth(root: str | Path, videos: list[dict[str, Any]]) -> None:
    """Write an EgoMask ground-truth folder. Each video: `{"video", "subset", "frames": [FRAME],
    "objects": {OBJ_ID: {"category", "masks": {FRAME: bool mask or None}}}, "expressions": {EXP_ID:
    {"exp", "obj_id"}}}`. Annotation files first, the meta files (which make the folder readable) last."""
    root = Path(root)
    meta: dict[str, dict] = {}
    meta_exp: dict[str, dict] = {}
    for v in videos:
        objects = {}
        for obj_id, obj in v["objects"].items():
            masks = obj["masks"]
            rle = {
                f: (encode_rle(masks[f]) if masks.get(f) is not None and masks[f].any() else None)
                for f in v["frames"]
            }
            folder = root / "annotations" / v["video"]
            folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(rle, folder / f"{obj_id}.json")
            objects[obj_id] = {"category": obj["category"], "frames": [f for f in v["frames"] if rle[f]]}
        meta[v["video"]] = {"subset": v["subset"], "objects": objects}
        meta_exp[v["video"]] = {"frames": list(v["frames"]), "expressions": v["expressions"]}
    for name in SUBSETS:
        keep = [vid for vid, m in meta.items() if m["subset"] == name]
        folder = root / "subset" / name
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic({"videos": {k: meta_exp[k] for k in keep}}, folder / "meta_expressions.json")
        write_json_atomic({"videos": {k: meta[k] for k in keep}}, folder / "meta.json")
    write_json_atomic({"videos": meta}, root / "meta.json")
    write_json_atomic({"videos": meta_exp}, root / "meta_expressions.json")


def is_ground_truth_folder(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "meta_expressions.json").is_file()
