"""EgoClip csv, taxonomy, EgoMCQ and Ego4D annotation readers/writers: round trips and bad input."""

from __future__ import annotations

import json
import os

import pytest
import torch

from egovlp.errors import InputError
from egovlp.formats import atomic_write, write_json_atomic
from egovlp.formats.ego4d import read_moments, read_nlq, read_vq2d
from egovlp.formats.egoclip import EGOCLIP_COLUMNS, EgoClipRow, read_egoclip, segment_id, write_egoclip
from egovlp.formats.egomcq import MCQItem, read_egomcq, write_egomcq
from egovlp.formats.taxonomy import TaxonomyEntry, multi_hot, read_taxonomy, write_taxonomy

ROWS = [
    EgoClipRow(
        0, "vid_a", 120.5, "narration_pass_1", 0, 1.25, 0.5, 2.0, "#C C picks up the red cup", [93], [7]
    ),
    EgoClipRow(
        1,
        "vid_a",
        120.5,
        "narration_pass_1",
        1,
        61.0,
        60.2,
        61.8,
        'C says "hi", then waits',
        [192, 115, 12],
        [],
    ),
    EgoClipRow(2, "vid_b", 30.0, "narration_pass_2", 0, 3.0, 2.5, 3.5, "#C C opens the fridge", [1], [2, 3]),
]


def test_egoclip_round_trip_and_layout(tmp_path):
    path = tmp_path / "egoclip.csv"
    write_egoclip(ROWS, path)
    assert read_egoclip(path) == ROWS
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == list(EGOCLIP_COLUMNS)
    first = lines[1].split("\t")
    assert first == ["0", "vid_a", "120.5", "narration_pass_1", "0", "1.25", "0.5", "2.0"] + [
        "#C C picks up the red cup",
        "[93]",
        "[7]",
    ]
    assert lines[2].split("\t")[-2:] == ["[192, 115, 12]", "[]"]
    assert [p.name for p in tmp_path.iterdir()] == ["egoclip.csv"]  # no temp file left behind


def test_egoclip_reads_float_spelled_ints_and_extra_columns(tmp_path):
    path = tmp_path / "e.csv"
    header = ["extra", *EGOCLIP_COLUMNS]
    row = ["x", "5.0", "v", "10", "narration_pass_1", "2", "4.5", "4", "5", "C cuts", "[3,4]", "[ 1 ]"]
    path.write_text("\t".join(header) + "\n" + "\t".join(row) + "\n")
    (r,) = read_egoclip(path)
    assert (r.clip_idx, r.narration_ind, r.tag_verb, r.tag_noun) == (5, 2, [3, 4], [1])


def _write_rows(path, cells_per_row):
    lines = ["\t".join(EGOCLIP_COLUMNS)] + ["\t".join(cells) for cells in cells_per_row]
    path.write_text("\n".join(lines) + "\n")


GOOD = ["0", "v", "10.0", "narration_pass_1", "0", "1.0", "0.5", "1.5", "C walks", "[1]", "[2]"]


@pytest.mark.parametrize(
    "column, value, expect",
    [
        ("tag_verb", "[1, x]", "tag_verb"),
        ("tag_noun", "__import__('os').system('echo hi')", "tag_noun"),
        ("tag_verb", "[1.5]", "tag_verb"),
        ("narration_time", "abc", "narration_time"),
        ("clip_start", "nan", "clip_start"),
        ("clip_idx", "1.5", "clip_idx"),
    ],
)
def test_egoclip_malformed_cell_names_row_and_column(tmp_path, column, value, expect):
    bad = list(GOOD)
    bad[EGOCLIP_COLUMNS.index(column)] = value
    path = tmp_path / "bad.csv"
    _write_rows(path, [GOOD, GOOD, bad])
    with pytest.raises(InputError) as err:
        read_egoclip(path)
    message = str(err.value)
    assert "bad.csv" in message and "row 3" in message and "line 4" in message and expect in message


def test_egoclip_missing_column_and_short_row(tmp_path):
    path = tmp_path / "nocol.csv"
    path.write_text("\t".join(c for c in EGOCLIP_COLUMNS if c != "clip_end") + "\n")
    with pytest.raises(InputError, match="nocol.csv.*clip_end"):
        read_egoclip(path)
    path = tmp_path / "short.csv"
    _write_rows(path, [GOOD, GOOD[:-2]])
    with pytest.raises(InputError, match=r"short.csv: row 2 \(line 3\): 9 fields"):
        read_egoclip(path)
    with pytest.raises(InputError, match="missing.csv"):
        read_egoclip(tmp_path / "missing.csv")


def test_segment_id():
    assert segment_id("v", 0.0) == "v_0"
    assert segment_id("v", 59.99) == "v_0"
    assert segment_id("v", 60.0) == "v_1"
    assert segment_id("v", 125.3) == "v_2"
    assert ROWS[1].segment == "vid_a_1"


def test_taxonomy_round_trip_and_multi_hot(tmp_path):
    verbs = [
        TaxonomyEntry(1, "put_down", ["puts down"]),
        TaxonomyEntry(0, "pick_up", ["picks up", "pick up"]),
    ]
    path = tmp_path / "verb_taxonomy.json"
    write_taxonomy(verbs, path, "verb")
    data = json.loads(path.read_text())
    assert list(data) == ["verbs"] and data["verbs"][0] == {
        "id": 0,
        "name": "pick_up",
        "synonyms": verbs[1].synonyms,
    }
    assert read_taxonomy(path) == sorted(verbs, key=lambda e: e.id)
    hot = multi_hot([0, 3, 3], 5)
    assert hot.dtype == torch.float32 and hot.tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert multi_hot([], 3).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(InputError, match="out of range"):
        multi_hot([5], 5)


def test_taxonomy_ego4d_list_style_and_errors(tmp_path):
    path = tmp_path / "noun_taxonomy.json"
    path.write_text(json.dumps({"nouns": ["cup", "knife_(blade)"]}))
    assert [(e.id, e.name) for e in read_taxonomy(path)] == [(0, "cup"), (1, "knife_(blade)")]
    path.write_text(json.dumps({"nouns": [{"id": 0, "name": "a"}, {"id": 0, "name": "b"}]}))
    with pytest.raises(InputError, match="duplicate"):
        read_taxonomy(path)
    path.write_text(json.dumps({"nouns": [{"id": "zero", "name": "a"}]}))
    with pytest.raises(InputError, match=r"nouns\[0\]\.id"):
        read_taxonomy(path)
    path.write_text(json.dumps({"things": []}))
    with pytest.raises(InputError, match="'verbs' or 'nouns'"):
        read_taxonomy(path)


def _choice(uid: str, start: float) -> dict:
    return {"video_uid": uid, "clip_start": start, "clip_end": start + 1.0, "clip_text": "C does"}


def _mcq() -> list[MCQItem]:
    query = {"clip_text": "C picks up the cup", "tag_verb": "[1]", "tag_noun": "[2]"}
    return [
        MCQItem("0", 2, query, [_choice(f"v{i}", 1.0) for i in range(5)], 1),
        MCQItem("1", 0, query, [_choice("v0", 2.0 * i) for i in range(5)], 2),
    ]


def test_egomcq_round_trip_and_layout(tmp_path):
    path = tmp_path / "egomcq.json"
    write_egomcq(_mcq(), path)
    raw = json.loads(path.read_text())
    assert list(raw) == ["0", "1"] and list(raw["0"]["choices"]) == ["0", "1", "2", "3", "4"]
    assert raw["1"]["types"] == 2 and raw["0"]["answer"] == 2
    assert read_egomcq(path) == _mcq()


@pytest.mark.parametrize(
    "mutate, expect",
    [
        (lambda d: d["1"].update(answer=5), r'\["1"\]\.answer'),
        (lambda d: d["0"].update(types=3), r'\["0"\]\.types'),
        (lambda d: d["1"]["choices"]["2"].pop("video_uid"), r'\["1"\]\.choices\["2"\]: missing video_uid'),
        (lambda d: d["0"]["choices"]["4"].update(clip_end="soon"), r"clip_end: expected a number"),
        (lambda d: d["0"].update(choices={"0": _choice("a", 0.0)}), "need at least 2"),
        (lambda d: d["1"]["query"].pop("clip_text"), r'\["1"\]\.query'),
        (lambda d: d["0"].pop("answer"), "missing 'answer'"),
    ],
)
def test_egomcq_malformed(tmp_path, mutate, expect):
    path = tmp_path / "egomcq.json"
    write_egomcq(_mcq(), path)
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=expect) as err:
        read_egomcq(path)
    assert "egomcq.json" in str(err.value)


NLQ = {
    "version": "v1",
    "videos": [
        {
            "video_uid": "vid0",
            "clips": [
                {
                    "clip_uid": "clip0",
                    "video_start_sec": 10.0,
                    "video_end_sec": 490.0,
                    "clip_start_sec": 0.0,
                    "clip_end_sec": 480.0,
                    "annotations": [
                        {
                            "annotation_uid": "ann0",
                            "language_queries": [
                                {
                                    "clip_start_sec": 3.0,
                                    "clip_end_sec": 7.5,
                                    "query": "where is the cup?",
                                    "template": "Objects: Where is object X?",
                                },
                                {"clip_start_sec": 1.0, "clip_end_sec": 2.0, "template": "x"},
                            ],
                        }
                    ],
                }
            ],
        }
    ],
}


def test_read_nlq_keeps_queries_without_text(tmp_path):
    path = tmp_path / "nlq_val.json"
    write_json_atomic(NLQ, path)
    (clip,) = read_nlq(path)
    assert (clip.video_uid, clip.clip_uid, clip.video_start_sec, clip.clip_end_sec) == (
        "vid0",
        "clip0",
        10.0,
        480.0,
    )
    q0, q1 = clip.queries
    assert (q0.annotation_uid, q0.query_idx, q0.query, q0.start, q0.end) == (
        "ann0",
        0,
        "where is the cup?",
        3.0,
        7.5,
    )
    assert q0.has_query and not q1.has_query and q1.query is None and q1.query_idx == 1


def test_read_nlq_malformed_names_json_path(tmp_path):
    data = json.loads(json.dumps(NLQ))
    data["videos"][0]["clips"].append({"clip_uid": "clip1", "annotations": [{"annotation_uid": "a"}]})
    path = tmp_path / "nlq_bad.json"
    write_json_atomic(data, path)
    with pytest.raises(InputError, match=r"nlq_bad.json: videos\[0\]\.clips\[1\]\.annotations\[0\]: missing"):
        read_nlq(path)
    data["videos"][0]["clips"][1]["annotations"][0]["language_queries"] = [{"clip_start_sec": "one"}]
    write_json_atomic(data, path)
    with pytest.raises(InputError, match=r"language_queries\[0\]\.clip_start_sec: expected a number"):
        read_nlq(path)
    path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_nlq(path)


def test_read_moments_all_annotators(tmp_path):
    label = {"start_time": 1.0, "end_time": 4.0, "label": "use_phone", "primary": True}
    data = {
        "videos": [
            {
                "video_uid": "v",
                "clips": [
                    {
                        "clip_uid": "c",
                        "video_start_sec": 0.0,
                        "video_end_sec": 480.0,
                        "annotations": [
                            {
                                "annotator_uid": "a1",
                                "labels": [label, {**label, "primary": False, "label": "x"}],
                            },
                            {"annotator_uid": "a2", "labels": [{**label, "start_time": 2.0}]},
                        ],
                    }
                ],
            }
        ]
    }
    path = tmp_path / "moments_val.json"
    write_json_atomic(data, path)
    (clip,) = read_moments(path)
    assert [(lab.start, lab.label, lab.primary, lab.annotator_uid) for lab in clip.labels] == [
        (1.0, "use_phone", True, "a1"),
        (1.0, "x", False, "a1"),
        (2.0, "use_phone", True, "a2"),
    ]
    data["videos"][0]["clips"][0]["annotations"][1]["labels"][0]["end_time"] = 0.5
    write_json_atomic(data, path)
    with pytest.raises(InputError, match=r"annotations\[1\]\.labels\[0\]: end_time"):
        read_moments(path)


def _box(f: int) -> dict:
    return {"frame_number": f, "x": 1.0, "y": 2.0, "width": 10.0, "height": 5.0}


def test_read_vq2d_keeps_order_and_invalid_sets(tmp_path):
    crop = {**_box(3), "original_width": 640, "original_height": 480}
    qs = {
        "is_valid": True,
        "query_frame": 40,
        "object_title": "cup",
        "visual_crop": crop,
        "response_track": [_box(10), _box(11)],
    }
    data = {
        "version": "1.0.5",
        "videos": [
            {
                "video_uid": "v0",
                "clips": [
                    {
                        "clip_uid": "c0",
                        "clip_fps": 5.0,
                        "video_start_sec": 2.0,
                        "annotations": [{"query_sets": {"2": qs, "1": {"is_valid": False}}}],
                    }
                ],
            },
            {
                "video_uid": "v1",
                "clips": [
                    {
                        "clip_uid": "c1",
                        "annotations": [
                            {"query_sets": {}},
                            {"query_sets": {"1": json.loads(json.dumps(qs))}},
                        ],
                    }
                ],
            },
        ],
    }
    path = tmp_path / "vq_val.json"
    write_json_atomic(data, path)
    c0, c1 = read_vq2d(path)
    assert (c0.video_uid, c0.clip_uid, c0.clip_fps, c0.video_start_sec, c0.video_end_sec) == (
        "v0",
        "c0",
        5.0,
        2.0,
        None,
    )
    assert [(q.annotation_idx, q.query_set_id, q.is_valid) for q in c0.query_sets] == [
        (0, "1", False),
        (0, "2", True),
    ]
    valid = c0.query_sets[1]
    assert valid.query_frame == 40 and valid.object_title == "cup"
    assert valid.visual_crop.original_width == 640 and [b.frame_number for b in valid.response_track] == [
        10,
        11,
    ]
    assert (c1.video_idx, c1.clip_idx, c1.num_annotations, c1.query_sets[0].annotation_idx) == (1, 0, 2, 1)
    data["videos"][1]["clips"][0]["annotations"][1]["query_sets"]["1"]["response_track"][1]["x"] = None
    write_json_atomic(data, path)
    with pytest.raises(
        InputError, match=r'annotations\[1\]\.query_sets\["1"\]\.response_track\[1\]: missing'
    ):
        read_vq2d(path)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "out.json"
    write_json_atomic({"a": 1}, path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
    with pytest.raises(TypeError):
        write_json_atomic({"a": object()}, path)
    assert json.loads(path.read_text()) == {"a": 1}
    with pytest.raises(RuntimeError), atomic_write(path) as handle:
        handle.write("partial")
        raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["out.json"]
