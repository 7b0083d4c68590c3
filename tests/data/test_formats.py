"""COCO, YOLO, CSV and JSONL: round trips, malformed files named by file and line, atomic writes."""

from __future__ import annotations

import json
import os

import pytest

from moondream_nb import ValidationError
from moondream_nb.data import (Dataset, FormatError, Label, read_coco, read_csv, read_jsonl, read_yolo,
                               write_coco, write_csv, write_jsonl, write_yolo)
from moondream_nb.data import fileio

from .conftest import solid

COCO = {
    "info": {"description": "test"},
    "images": [
        {"id": 10, "file_name": "a.jpg", "width": 640, "height": 480},
        {"id": 11, "file_name": "sub/b.jpg", "width": 100, "height": 200},
        {"id": 12, "file_name": "empty.jpg", "width": 50, "height": 50},
    ],
    "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}],
    "annotations": [
        {"id": 1, "image_id": 10, "category_id": 1, "bbox": [10.5, 20.25, 100.0, 50.0], "area": 5000, "iscrowd": 0},
        {"id": 2, "image_id": 10, "category_id": 1, "bbox": [300, 200, 40, 40]},
        {"id": 3, "image_id": 10, "category_id": 3, "bbox": [0, 0, 640, 480]},
        {"id": 4, "image_id": 11, "category_id": 3, "bbox": [1.0, 2.0, 3.0, 4.0]},
    ],
}


def boxes_of(coco: dict) -> list[tuple]:
    """Every box as (file_name, category name, x, y, w, h)."""
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    return sorted((files[a["image_id"]], names[a["category_id"]], *a["bbox"]) for a in coco["annotations"])


def same_boxes(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(x[:2] == y[:2] and all(abs(p - q) < 1e-9 for p, q in zip(x[2:], y[2:]))
                                    for x, y in zip(a, b))


def listing(folder) -> list[str]:
    return sorted(os.listdir(folder))


# ---------------------------------------------------------------- COCO


def test_coco_to_labels(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(COCO))
    labels = read_coco(path)
    assert [(lb.image_id, lb.prompt, len(lb.target["boxes"])) for lb in labels] == [
        ("a.jpg", "cat", 2), ("a.jpg", "dog", 1), ("sub/b.jpg", "dog", 1)]
    box = labels[0].target["boxes"][0]
    assert box == pytest.approx({"x_min": 10.5 / 640, "y_min": 20.25 / 480, "x_max": 110.5 / 640, "y_max": 70.25 / 480})
    assert labels[0].meta["width"] == 640 and labels[0].meta["annotation_ids"] == [1, 2]


def test_coco_round_trip_keeps_every_box(tmp_path):
    src, out = tmp_path / "ann.json", tmp_path / "out.json"
    src.write_text(json.dumps(COCO))
    written = write_coco(out, read_coco(src))
    again = json.loads(out.read_text())
    assert again == written
    assert same_boxes(boxes_of(again), boxes_of(COCO))
    assert {c["name"]: c["id"] for c in again["categories"]} == {"cat": 1, "dog": 3}  # ids kept
    assert {im["file_name"]: im["id"] for im in again["images"]} == {"a.jpg": 10, "sub/b.jpg": 11}
    # and once more: labels → COCO → labels is stable
    assert read_coco(out) == read_coco(src)


def test_coco_export_of_new_labels_takes_sizes_from_the_dataset(tmp_path):
    solid((1, 1, 1), (200, 100)).save(tmp_path / "x.png")
    ds = Dataset.from_folder(tmp_path)
    labels = [Label.detect("x.png", "box", [(0.25, 0.5, 0.75, 1.0)]), Label.query("x.png", "Why?", "because"),
              Label.detect("x.png", "ghost", [])]
    coco = write_coco(tmp_path / "out.json", labels, sizes=ds)
    assert coco["images"] == [{"id": 1, "file_name": "x.png", "width": 200, "height": 100}]
    assert [c["name"] for c in coco["categories"]] == ["box", "ghost"]
    assert coco["annotations"][0]["bbox"] == [50.0, 50.0, 100.0, 50.0]
    with pytest.raises(ValidationError, match="image 'x.png': size unknown"):
        write_coco(tmp_path / "nosize.json", labels)
    assert not (tmp_path / "nosize.json").exists()


def test_coco_clips_boxes_past_the_edge(tmp_path):
    coco = json.loads(json.dumps(COCO))
    coco["annotations"][3]["bbox"] = [-2.0, 190.0, 10.0, 20.0]
    (tmp_path / "c.json").write_text(json.dumps(coco))
    box = read_coco(tmp_path / "c.json")[2].target["boxes"][0]
    assert box["x_min"] == 0.0 and box["y_max"] == 1.0


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["annotations"][1].update(bbox=[1, 2, 3]), r"annotations\[1\]\.bbox: must be \[x, y, width, height\]"),
        (lambda c: c["annotations"][2].update(bbox=[1, 2, -3, 4]), r"annotations\[2\]\.bbox"),
        (lambda c: c["annotations"][0].update(category_id=99), r"annotations\[0\]\.category_id: must be the id of an entry in categories"),
        (lambda c: c["annotations"][3].update(image_id=7), r"annotations\[3\]\.image_id"),
        (lambda c: c["images"][1].pop("width"), r"images\[1\]\.width: required"),
        (lambda c: c["categories"][1].update(name=""), r"categories\[1\]\.name"),
        (lambda c: c.pop("annotations"), r"annotations: required"),
    ],
)
def test_coco_malformed_names_the_json_path(tmp_path, edit, message):
    coco = json.loads(json.dumps(COCO))
    edit(coco)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(coco))
    with pytest.raises(FormatError, match=f"^{str(path)}: {message}") as info:
        read_coco(path)
    assert info.value.file == str(path)


def test_coco_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "images": [],\n  "annotations": [,]\n}')
    with pytest.raises(FormatError, match=rf"^{path}, line 3: invalid JSON") as info:
        read_coco(path)
    assert info.value.line == 3


# ---------------------------------------------------------------- YOLO


def test_yolo_round_trip_with_dataset_ids(tmp_path):
    labels = [Label.detect("a.png", "cat", [(0.1, 0.2, 0.5, 0.6), (0.0, 0.0, 1.0, 1.0)]),
              Label.detect("a.png", "dog", [(0.3, 0.3, 0.4, 0.4)]),
              Label.detect("sub/b.jpg", "dog", [(0.25, 0.5, 0.75, 1.0)]),
              Label.query("a.png", "Why?", "skipped: not a box")]
    classes = write_yolo(tmp_path / "labels", labels)
    assert classes == ["cat", "dog"]
    assert (tmp_path / "labels" / "classes.txt").read_text() == "cat\ndog\n"
    assert (tmp_path / "labels" / "a.txt").read_text().splitlines()[0].split() == ["0", "0.3", "0.4", "0.4", "0.39999999999999997"]
    back = read_yolo(tmp_path / "labels", tmp_path / "labels" / "classes.txt", image_ids=["a.png", "sub/b.jpg", "c.png"])
    assert [(lb.image_id, lb.prompt) for lb in back] == [("a.png", "cat"), ("a.png", "dog"), ("sub/b.jpg", "dog")]
    for got, want in zip(back, labels):
        for g, w in zip(got.target["boxes"], want.target["boxes"]):
            assert g == pytest.approx(w, abs=1e-12)
    assert read_yolo(tmp_path / "labels", classes)[2].image_id == "sub/b.jpg"  # default: .jpg


@pytest.mark.parametrize(
    "content, line, message",
    [
        ("0 0.5 0.5 0.1 0.1\n1 0.5 0.5 0.1\n", 2, "5 values"),
        ("0 0.5 0.5 0.1 0.1\n\n5 0.5 0.5 0.1 0.1\n", 3, "class 5 is not in the 2 classes"),
        ("x 0.5 0.5 0.1 0.1\n", 1, "integer class"),
        ("0 0.5 1.5 0.1 0.1\n", 1, "y_center must be a normalized number"),
        ("0 0.5 nan 0.1 0.1\n", 1, "y_center must be"),
    ],
)
def test_yolo_malformed_names_file_and_line(tmp_path, content, line, message):
    (tmp_path / "a.txt").write_text(content)
    with pytest.raises(FormatError, match=rf"a.txt, line {line}: .*{message}") as info:
        read_yolo(tmp_path, ["cat", "dog"])
    assert info.value.line == line and info.value.file.endswith("a.txt")


def test_yolo_label_file_without_image(tmp_path):
    (tmp_path / "zzz.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(FormatError, match="zzz.txt: no image in the dataset"):
        read_yolo(tmp_path, ["cat"], image_ids=["a.png"])


def test_yolo_unknown_class_writes_nothing(tmp_path):
    labels = [Label.detect("a.png", "cat", [(0, 0, 1, 1)]), Label.detect("b.png", "cow", [(0, 0, 1, 1)])]
    with pytest.raises(ValidationError, match="'cow'"):
        write_yolo(tmp_path / "out", labels, classes=["cat"])
    assert not (tmp_path / "out").exists() or listing(tmp_path / "out") == []


# ---------------------------------------------------------------- CSV


ALL_KINDS = [
    Label.point("a.jpg", "bolt", [(0.1, 0.2), (0.3, 1 / 3)]),
    Label.point("a.jpg", "nut", []),
    Label.point("b.jpg", "bolt", boxes=[(0.1, 0.2, 0.3, 0.4)]),
    Label.detect("b.jpg", "bolt, large", [(0.0, 0.0, 0.5, 0.5)]),
    Label.detect("b.jpg", "nothing", []),
    Label.query("a.jpg", 'Say "hi",\nplease', "hi", reasoning="asked to"),
    Label.query("a.jpg", "What is this?", "", spatial_refs=[(0.5, 0.5)]),
    Label.query("a.jpg", "What is this?", "a nut", spatial_refs=[(0.1, 0.1, 0.2, 0.2)]),
]


def test_csv_round_trip_every_kind(tmp_path):
    path = tmp_path / "labels.csv"
    rows = write_csv(path, ALL_KINDS)
    assert rows == 9
    assert read_csv(path) == ALL_KINDS


def test_csv_reads_hand_written_rows(tmp_path):
    path = tmp_path / "hand.csv"
    path.write_text("image_id,skill,prompt,x,y\nimg.png,point,dot,0.5,0.25\nimg.png,point,dot,0.1,0.1\n")
    assert read_csv(path) == [Label.point("img.png", "dot", [(0.5, 0.25), (0.1, 0.1)])]


@pytest.mark.parametrize(
    "rows, line, message",
    [
        (["a.jpg,point,bolt,,,0.1,abc,,,,,"], 2, "y: must be a number"),
        (["a.jpg,point,bolt,,,0.1,0.2,,,,,", "a.jpg,point,bolt,,,1.5,0.2,,,,,"], 3, r"x: must be a number >= 0 and <= 1 \(got 1.5\)"),
        (["a.jpg,detect,bolt,,,,,0.1,0.2,0.3,0.4,", "a.jpg,detect,bolt,,,,,0.5,0.2,0.3,0.4,"], 3, "x_min must be <= x_max"),
        (["a.jpg,detect,bolt,,,,,0.1,0.2,0.3,,"], 2, "a box needs x_min"),
        (["a.jpg,point,bolt,,,0.1,0.2,0.1,0.2,0.3,0.4,"], 2, "either a point"),
        (["a.jpg,point,bolt,,,0.1,0.2,,,,,", ",point,bolt,,,0.1,0.2,,,,,"], 3, "image_id: must not be empty"),
        (["a.jpg,query,Why?,yes,,,,,,,,", "a.jpg,query,Why?,no,,,,,,,,"], 3, "a second answer"),
        (["a.jpg,segment,bolt,,,,,,,,,"], 2, "skill: must be one of"),
        (["a.jpg,query,What?,x,,,,,,,,[[0.1"], 2, "spatial_refs: invalid JSON"),
        (["a.jpg,point,bolt,,,0.1,0.2,,,,,,extra"], 2, "13 cells for 12 columns"),
    ],
)
def test_csv_malformed_names_file_and_line(tmp_path, rows, line, message):
    path = tmp_path / "bad.csv"
    path.write_text(",".join(("image_id", "skill", "prompt", "answer", "reasoning", "x", "y",
                              "x_min", "y_min", "x_max", "y_max", "spatial_refs")) + "\n" + "\n".join(rows) + "\n")
    with pytest.raises(FormatError, match=rf"bad.csv, line {line}: .*{message}") as info:
        read_csv(path)
    assert info.value.line == line


def test_csv_missing_columns(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("image,skill\nx,point\n")
    with pytest.raises(FormatError, match=r"bad.csv, line 1: missing column\(s\) image_id, prompt"):
        read_csv(path)


# ---------------------------------------------------------------- JSONL


def test_jsonl_round_trip_with_meta(tmp_path):
    labels = ALL_KINDS + [Label.point("c.jpg", "x", [], meta={"by": "ann", "n": 3})]
    assert write_jsonl(tmp_path / "l.jsonl", labels) == len(labels)
    back = read_jsonl(tmp_path / "l.jsonl")
    assert back == labels and back[-1].meta == {"by": "ann", "n": 3}


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"image_id": "a", "skill": "point", "prompt": "x", "target": {"points": [}}', "invalid JSON"),
        ('{"image_id": "a", "skill": "point", "prompt": "x", "target": {"points": [{"x": 2, "y": 0}]}}',
         r"target.points\[0\].x: must be a number >= 0 and <= 1 \(got 2"),
        ('{"image_id": "a", "skill": "point", "prompt": "x"}', "target: required"),
        ('[1, 2]', "label: must be an object"),
    ],
)
def test_jsonl_malformed_names_file_and_line(tmp_path, line, message):
    good = json.dumps(ALL_KINDS[0].to_dict())
    path = tmp_path / "l.jsonl"
    path.write_text(good + "\n\n" + line + "\n" + good + "\n")
    with pytest.raises(FormatError, match=rf"l.jsonl, line 3: {message}") as info:
        read_jsonl(path)
    assert info.value.line == 3


# ---------------------------------------------------------------- nothing half-written


@pytest.mark.parametrize("writer", [write_jsonl, write_csv])
def test_a_bad_label_leaves_the_old_file_whole(tmp_path, writer):
    path = tmp_path / "out"
    writer(path, ALL_KINDS)
    before = path.read_bytes()
    with pytest.raises(ValidationError, match="expected a Label"):
        writer(path, [ALL_KINDS[0], {"image_id": "not a label"}])
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["out"]


def test_a_failing_disk_leaves_old_files_and_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(COCO))
    labels = read_coco(path)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        write_coco(path, labels[:1])
    with pytest.raises(OSError, match="No space left"):
        write_yolo(tmp_path / "yolo", labels)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["ann.json", "yolo"] and listing(tmp_path / "yolo") == []


def test_yolo_files_all_prepared_before_any_replace(tmp_path, monkeypatch):
    labels = [Label.detect("a.png", "cat", [(0, 0, 1, 1)]), Label.detect("b.png", "cat", [(0, 0, 0.5, 0.5)])]
    write_yolo(tmp_path, labels)
    before = {f: (tmp_path / f).read_text() for f in listing(tmp_path)}
    calls = []
    real = fileio._write_temp

    def fail_second(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(5, "I/O error")
        return real(path, data)

    monkeypatch.setattr(fileio, "_write_temp", fail_second)
    with pytest.raises(OSError):
        write_yolo(tmp_path, [Label.detect("a.png", "cat", []), Label.detect("b.png", "cat", [])])
    assert {f: (tmp_path / f).read_text() for f in listing(tmp_path)} == before
