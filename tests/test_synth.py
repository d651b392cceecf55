"""`egovlp synth`: the synthetic world's files parse, agree with each other and with the pixels."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from egovlp.cli import run as cli_run
from egovlp.errors import InputError
from egovlp.formats.ego4d import read_moments, read_nlq, read_vq2d
from egovlp.formats.egoclip import EGOCLIP_COLUMNS, read_egoclip
from egovlp.formats.egomcq import INTER, INTRA, read_egomcq
from egovlp.formats.fho import pnr_index_to_frame, pnr_label, read_fho
from egovlp.formats.taxonomy import read_taxonomy
from egovlp.synth import fho, main, synthesize
from egovlp.synth.render import render_video
from egovlp.synth.world import make_world

# 7 videos, 5 of them val: inter questions need 4 other val videos; 30 s gives ~6 actions a video
ARGS = {"videos": 7, "val_videos": 5, "duration": 30.0, "short_side": 64, "seed": 3, "egomask_videos": 3}
ANNOTATION_FILES = [
    "egoclip.csv",
    "egomcq.json",
    "nlq_train.json",
    "nlq_val.json",
    "moments_train.json",
    "moments_val.json",
    "vq_train.json",
    "vq_val.json",
    "verb_taxonomy.json",
    "noun_taxonomy.json",
    "split.json",
    "world.json",
    "fho_oscc-pnr_train.json",
    "fho_oscc-pnr_val.json",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    summary = synthesize(out, workers=1, **ARGS)
    assert summary["videos"] == 7 and summary["val"] == 5
    return out


@pytest.fixture(scope="module")
def world(data) -> dict:
    return json.loads((data / "world.json").read_text())


def _decode(path: Path) -> tuple[np.ndarray, tuple[str, Fraction]]:
    """All frames as RGB, and the (codec name, average rate) read while the file is open: PyAV 18
    refuses stream attributes once its container is closed."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        return frames, (stream.codec_context.name, stream.average_rate)


def _actions(world: dict, video_uid: str) -> list[dict]:
    return [a for a in world["actions"] if a["video_uid"] == video_uid]


def test_files_exist_and_parse(data, world):
    for name in ANNOTATION_FILES:
        assert (data / name).is_file(), name
    verbs = read_taxonomy(data / "verb_taxonomy.json")
    nouns = read_taxonomy(data / "noun_taxonomy.json")
    assert len(verbs) >= 8 and len(nouns) >= 20
    assert [v.id for v in verbs] == list(range(len(verbs)))
    raw = json.loads((data / "noun_taxonomy.json").read_text())
    assert set(raw) == {"nouns"} and set(raw["nouns"][0]) == {"id", "name", "synonyms"}

    split = json.loads((data / "split.json").read_text())
    assert len(split["train"]) == 2 and len(split["val"]) == 5
    assert not set(split["train"]) & set(split["val"])
    # videos/ holds exactly the world's videos: the narrated ones and the state-change ones
    fho_uids = {c.video_uid for s in ("train", "val") for c in read_fho(data / f"fho_oscc-pnr_{s}.json")}
    assert not fho_uids & set(split["train"] + split["val"])
    grounding = [
        v
        for s in ("train", "val")
        for v in json.loads((data / "egomask" / s / "meta.json").read_text())["videos"]
    ]
    assert sorted(p.stem for p in (data / "videos").glob("*.mp4")) == sorted(
        [*split["train"], *split["val"], *fho_uids, *grounding]
    )

    header = (data / "egoclip.csv").read_text().splitlines()[0]
    assert header.split("\t") == list(EGOCLIP_COLUMNS)
    rows = read_egoclip(data / "egoclip.csv")
    assert rows and {r.video_uid for r in rows} == set(split["train"])
    assert [r.clip_idx for r in rows] == list(range(len(rows)))
    for r in rows:
        assert r.narration_source == "narration_pass_1"
        verb, noun = verbs[r.tag_verb[0]], nouns[r.tag_noun[0]]
        # the narration names the verb and the coloured object: "#C C picks up the red cup"
        assert r.clip_text == f"#C C {verb.synonyms[0]} the {noun.synonyms[1]}"
        assert r.clip_start < r.narration_time < r.clip_end <= r.video_dur

    assert len(read_nlq(data / "nlq_val.json")) == 5
    assert len(read_moments(data / "moments_train.json")) == 2
    assert sum(len(c.query_sets) for c in read_vq2d(data / "vq_val.json")) > 0
    assert len(world["actions"]) == sum(len(_actions(world, u)) for u in split["train"] + split["val"])


def test_same_seed_same_bytes_other_seed_differs(data, tmp_path):
    # the annotation files do not depend on the videos: annotations-only reproduces the fixture's
    a, b = tmp_path / "a", tmp_path / "b"
    sizes = ["--videos", "7", "--val-videos", "5", "--duration", "30", "--short-side", "64"]
    assert main([str(a), "--annotations-only", *sizes, "--seed", "3"]) == 0
    synthesize(b, render=False, **{**ARGS, "seed": 4})
    for name in ANNOTATION_FILES:
        assert (a / name).read_bytes() == (data / name).read_bytes(), name
    for name in ("egoclip.csv", "egomcq.json", "nlq_val.json", "vq_val.json", "world.json"):
        assert (b / name).read_bytes() != (data / name).read_bytes(), name
    assert not (a / "videos").exists()


def test_video_bytes_are_deterministic(tmp_path):
    plan = make_world(1, seed=5, duration=8.0, n_val=0)[0]
    render_video(plan, tmp_path / "a.mp4", 32)
    render_video(plan, tmp_path / "b.mp4", 32)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_videos_decode_as_h264_30fps(data, world):
    for video in world["videos"]:
        frames, (codec, rate) = _decode(data / "videos" / f"{video['video_uid']}.mp4")
        assert codec == "h264"
        assert rate == 30
        assert frames.shape == (30 * 30, 64, 84, 3)
        assert video["num_frames"] == 900 and (world["width"], world["height"]) == (84, 64)
        # not a constant picture: the frames change over time
        assert np.abs(frames[::30].astype(np.int16) - frames[0]).mean() > 1.0


def _box_diff(frames: np.ndarray, i: int, j: int, box) -> float:
    """Mean absolute pixel difference between frames i and j inside a box."""
    x, y, w, h = int(box.x), int(box.y), int(box.width), int(box.height)
    return float(
        np.abs(frames[i, y : y + h, x : x + w].astype(float) - frames[j, y : y + h, x : x + w]).mean()
    )


def test_vq2d_boxes_cover_the_rendered_object(data, world):
    checked = 0
    for split in ("train", "val"):
        for clip in read_vq2d(data / f"vq_{split}.json"):
            frames, _ = _decode(data / "videos" / f"{clip.video_uid}.mp4")
            visible = np.zeros(len(frames), bool)
            for a in _actions(world, clip.video_uid):
                visible[int(np.ceil(a["visible_start"] * 30)) : int(a["visible_end"] * 30) + 2] = True
            empty = np.flatnonzero(~visible)
            e1, e2 = empty[len(empty) // 3], empty[2 * len(empty) // 3]
            assert clip.video_start_sec == 1.0
            for qs in clip.query_sets:
                assert qs.is_valid and qs.response_track
                last_track = max(b.frame_number for b in qs.response_track)
                assert last_track < qs.query_frame < qs.visual_crop.frame_number
                assert (qs.visual_crop.original_width, qs.visual_crop.original_height) == (84, 64)
                for box in (qs.response_track[len(qs.response_track) // 2], qs.visual_crop):
                    i = 30 + 6 * box.frame_number  # 5 fps clip frame -> 30 fps video frame (offset 1 s)
                    assert visible[i]
                    assert box.width > 2 and box.height > 2
                    assert box.x + box.width <= 84 and box.y + box.height <= 64
                    # the object is there: far from the empty table, which barely changes by itself
                    d = _box_diff(frames, i, e1, box)
                    assert d > 10 and d > 3 * _box_diff(frames, e2, e1, box), (qs.object_title, box)
                    checked += 1
    assert checked >= 4


def test_vq2d_track_is_the_latest_visit_before_the_query(data, world):
    nouns = {n["name"]: n["id"] for n in world["nouns"]}
    for split in ("train", "val"):
        for clip in read_vq2d(data / f"vq_{split}.json"):
            visits = _actions(world, clip.video_uid)
            for qs in clip.query_sets:
                query_t = 1.0 + qs.query_frame / 5
                mine = [a for a in visits if a["noun_id"] == nouns[qs.object_title]]
                before = [a for a in mine if a["visible_end"] < query_t]
                assert before and not [a for a in mine if a["visible_start"] <= query_t <= a["visible_end"]]
                last = before[-1]
                for b in qs.response_track:
                    assert last["visible_start"] <= 1.0 + b.frame_number / 5 <= last["visible_end"]
                assert any(
                    a["visible_start"] <= 1.0 + qs.visual_crop.frame_number / 5 for a in mine[len(before) :]
                )


def test_egomcq_questions(data):
    split = json.loads((data / "split.json").read_text())
    items = read_egomcq(data / "egomcq.json")
    inter = [q for q in items if q.type == INTER]
    intra = [q for q in items if q.type == INTRA]
    assert inter and intra and abs(len(inter) - len(intra)) <= max(3, len(items) // 5)
    for q in items:
        keys = [(c["video_uid"], c["clip_start"], c["clip_end"]) for c in q.choices]
        assert len(q.choices) == 5 and len(set(keys)) == 5
        assert 0 <= q.answer < 5
        right = q.choices[q.answer]
        assert (right["video_uid"], right["clip_start"], right["clip_text"]) == (
            q.query["video_uid"],
            q.query["clip_start"],
            q.query["clip_text"],
        )
        videos = [c["video_uid"] for c in q.choices]
        assert set(videos) <= set(split["val"])
        for i, c in enumerate(q.choices):
            if i != q.answer:
                assert (c["tag_verb"], c["tag_noun"]) != (q.query["tag_verb"], q.query["tag_noun"])
        if q.type == INTRA:
            assert len(set(videos)) == 1
        else:
            assert len(set(videos)) == 5


def test_nlq_windows_point_to_the_last_matching_action(data, world):
    verbs = {v.synonyms[1]: v.name for v in read_taxonomy(data / "verb_taxonomy.json")}
    pattern_when = re.compile(r"When did I (.+) the (\w+) (\w+)\?")
    pattern_where = re.compile(r"Where did I put the (\w+) (\w+)\?")
    n_where = 0
    for split in ("train", "val"):
        for clip in read_nlq(data / f"nlq_{split}.json"):
            assert (clip.video_start_sec, clip.clip_start_sec) == (1.0, 0.0)
            assert clip.clip_end_sec == clip.video_end_sec - clip.video_start_sec == 28.0
            actions = _actions(world, clip.video_uid)
            assert len(clip.queries) >= 3
            assert [q.query_idx for q in clip.queries] == list(range(len(clip.queries)))
            for q in clip.queries:
                assert 0 <= q.start < q.end <= clip.clip_end_sec
                if m := pattern_when.fullmatch(q.query):
                    verb, noun = verbs[m.group(1)], m.group(3)
                else:
                    m = pattern_where.fullmatch(q.query)
                    assert m, q.query
                    verb, noun = "put_down", m.group(2)
                    n_where += 1
                match = [a for a in actions if a["verb"] == verb and a["noun"] == noun]
                assert match and q.template
                # clip-relative: the clip starts 1 s into the video
                assert (q.start, q.end) == (round(match[-1]["start"] - 1, 3), round(match[-1]["end"] - 1, 3))
    assert n_where > 0


def test_moments_label_every_action(data, world):
    verbs = {v.name for v in read_taxonomy(data / "verb_taxonomy.json")}
    for split in ("train", "val"):
        for clip in read_moments(data / f"moments_{split}.json"):
            actions = _actions(world, clip.video_uid)
            assert [(lab.label, lab.start, lab.end) for lab in clip.labels] == [
                (a["verb"], round(a["start"] - 1, 3), round(a["end"] - 1, 3)) for a in actions
            ]
            assert all(lab.primary and lab.label in verbs for lab in clip.labels)


def test_worker_pool_matches_single_process(tmp_path):
    args = {"videos": 2, "val_videos": 1, "duration": 8.0, "short_side": 32, "seed": 1, "egomask_videos": 3}
    synthesize(tmp_path / "one", workers=1, **args)
    synthesize(tmp_path / "two", workers=2, **args)
    one = sorted((tmp_path / "one" / "videos").glob("*.mp4"))
    assert len(one) == 2 + 2 + 3  # the narrated videos, (at least 2) state-change and 3 grounding videos
    for path in one:
        assert path.read_bytes() == (tmp_path / "two" / "videos" / path.name).read_bytes()


@pytest.mark.parametrize(
    "argv",
    [["--videos", "1"], ["--val-videos", "3", "--videos", "3"], ["--short-side", "8"], ["--duration", "2"]],
)
def test_bad_arguments_are_input_errors(tmp_path, argv, capsys):
    with pytest.raises(InputError):
        main([str(tmp_path / "out"), "--annotations-only", *argv])
    assert cli_run(["synth", str(tmp_path / "out"), "--annotations-only", *argv]) == 2
    assert "egovlp synth: error:" in capsys.readouterr().err


def test_output_path_that_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        synthesize(target, render=False)


# ------------------------------------------------------------------------------------------------
# object state changes (OSCC / PNR)


def test_fho_annotations_are_valid_and_balanced(data):
    clips = {s: read_fho(data / f"fho_oscc-pnr_{s}.json") for s in ("train", "val")}
    videos = {s: {c.video_uid for c in clips[s]} for s in clips}
    assert videos["train"] and videos["val"] and not videos["train"] & videos["val"]
    assert all((data / "videos" / f"{uid}.mp4").is_file() for uid in videos["train"] | videos["val"])
    ids = [c.unique_id for s in clips for c in clips[s]]
    assert len(ids) == len(set(ids))
    offsets = []
    for split, items in clips.items():
        # both classes in both splits, two of each per video
        assert sum(c.state_change for c in items) * 2 == len(items), split
        for c in items:
            assert c.parent_end_frame - c.parent_start_frame == 240 and c.duration == pytest.approx(8.0)
            assert c.clip_start_frame == c.parent_start_frame - 30 and c.clip_start_sec == pytest.approx(
                c.parent_start_sec - 1
            )
            assert c.parent_end_sec <= fho.video_duration() - 1
            if c.state_change:
                assert c.clip_pnr_frame == c.parent_pnr_frame - 30
                offsets.append(c.parent_pnr_frame - c.parent_start_frame)
                # the label's mapped frame is the sampled frame nearest the PNR
                got = pnr_index_to_frame(c.parent_start_frame, c.parent_end_frame, pnr_label(c))
                assert abs(got - c.parent_pnr_frame) <= 7.5
            else:
                assert c.parent_pnr_frame is None and pnr_label(c) is None
    # PNR frames spread over the window, not bunched
    assert min(offsets) < 100 < 140 < max(offsets)


def _object_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b).mean())


def test_fho_state_changes_at_the_pnr_frame_and_stays(tmp_path):
    from egovlp.synth.render import make_background
    from egovlp.synth.world import frame_size

    plans = fho.make_fho_world(3, seed=2, n_val=1)
    width, height = frame_size(64)
    kinds, pre_changed = set(), 0
    for plan in plans:
        bg = make_background(plan.scene, width, height)
        for ep in plan.episodes:
            # the same episode rendered as it is and as if nothing changed: identical up to just
            # before the PNR, clearly different from the PNR frame to the end of the window
            def pair(frame: int, ep=ep, plan=plan, bg=bg) -> float:
                t = frame / 30
                return _object_diff(
                    fho.render_fho_frame(plan, t, bg), fho.render_fho_frame(plan, t, bg, force=False)
                )

            after = range(ep.pnr_frame, ep.start_frame + 240 + 1, 15)
            before = range(ep.start_frame, ep.pnr_frame - 3, 15)
            if ep.state_change:
                kinds.add(ep.change)
                assert all(pair(f) == 0 for f in before), ep
                assert all(pair(f) > 0.3 for f in after), ep
            elif ep.pre_changed:  # changed look throughout: no moment of change inside the window
                pre_changed += 1
                assert all(pair(f) > 0.3 for f in [*before, *after]), ep
            else:
                assert all(pair(f) == 0 for f in [*before, *after]), ep
    assert len(kinds) >= 3 and pre_changed >= 1


def test_fho_videos_decode_and_show_the_change(data):
    (train,) = [c for c in read_fho(data / "fho_oscc-pnr_train.json") if c.state_change][:1]
    frames, (codec, rate) = _decode(data / "videos" / f"{train.video_uid}.mp4")
    assert codec == "h264" and rate == 30
    assert len(frames) == round(fho.video_duration() * 30) and frames.shape[1:] == (64, 84, 3)
    # inside the window the object is in view: a frame well before the PNR differs from the
    # empty table between windows; after the PNR the picture differs from before it
    pre, post = train.parent_pnr_frame - 12, train.parent_pnr_frame + 12
    assert _object_diff(frames[pre], frames[post]) > 0.5
