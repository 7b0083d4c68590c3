"""Datasets from folders, paths, in-memory images, DataFrames and Hugging Face datasets."""

from __future__ import annotations

import importlib.util
import io
import os
import sys

import pytest
from PIL import Image

from moondream_nb import ValidationError
from moondream_nb.data import Dataset, Label, from_frame, from_hf, image_id_for

from .conftest import solid


def test_folder_ids_are_relative_posix_paths_sorted(image_folder):
    ds = Dataset.from_folder(image_folder)
    assert ds.ids == ["a.png", "sub/b.jpg"]  # hidden folder and non-images skipped
    assert ds["sub/b.jpg"].image.size == (20, 50)
    assert ds["sub/b.jpg"].size == (20, 50)
    assert ds[0].path == os.path.join(str(image_folder), "a.png")
    assert ds.index("sub/b.jpg") == 1
    assert Dataset.from_folder(image_folder, recursive=False).ids == ["a.png"]


def test_folder_ids_survive_moving_the_folder(image_folder, tmp_path):
    before = Dataset.from_folder(image_folder).ids
    moved = tmp_path / "elsewhere"
    image_folder.rename(moved)
    assert Dataset.from_folder(moved).ids == before


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValidationError, match="no image files"):
        Dataset.from_folder(tmp_path)
    with pytest.raises(ValidationError, match="not a folder"):
        Dataset.from_folder(tmp_path / "nope")


def test_images_load_lazily_and_a_broken_file_names_itself(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    solid((1, 2, 3)).save(tmp_path / "ok.png")
    ds = Dataset.from_folder(tmp_path)  # nothing decoded yet, so the broken file does not stop it
    assert ds["ok.png"].image.getpixel((0, 0)) == (1, 2, 3)
    with pytest.raises(ValidationError, match="broken.png: cannot open image"):
        ds["broken.png"].image


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° when displayed
    img.save(tmp_path / "r.jpg", exif=exif)
    item = Dataset.from_folder(tmp_path)[0]
    assert item.image.size == (20, 40)
    assert item.size == (20, 40)


def test_paths_relative_to_root_or_as_given(image_folder):
    paths = [image_folder / "sub" / "b.jpg", image_folder / "a.png"]
    assert Dataset.from_paths(paths, root=image_folder).ids == ["sub/b.jpg", "a.png"]
    assert Dataset.from_paths(paths).ids == [str(p).replace(os.sep, "/") for p in paths]
    with pytest.raises(ValidationError, match=r"paths\[0\]: no such image file"):
        Dataset.from_paths([image_folder / "missing.png"])
    with pytest.raises(ValidationError, match="not under root"):
        Dataset.from_paths([image_folder / "a.png"], root=image_folder / "sub")


def test_in_memory_images_get_content_hash_ids(image_folder):
    red, green = solid((255, 0, 0)), solid((0, 255, 0))
    data = io.BytesIO()
    green.save(data, format="PNG")
    ds = Dataset.from_images([red, data.getvalue(), image_folder / "a.png"], root=image_folder)
    assert ds.ids == [image_id_for(red), image_id_for(data.getvalue()), "a.png"]
    assert len(ds.ids[0]) == 16 and ds.ids[0] != ds.ids[1]
    # The same picture made again has the same id (stable across sessions); other pixels differ.
    assert image_id_for(solid((255, 0, 0))) == ds.ids[0]
    assert image_id_for(solid((255, 0, 1))) != ds.ids[0]
    assert ds[1].image.getpixel((0, 0)) == (0, 255, 0)
    assert ds[0].image is red


def test_duplicate_ids_are_rejected():
    with pytest.raises(ValidationError, match="items 0 and 1 have the same image_id"):
        Dataset.from_images([solid((5, 5, 5)), solid((5, 5, 5))])
    assert Dataset.from_images([solid((5, 5, 5)), solid((5, 5, 5))], ids=["x", "y"]).ids == ["x", "y"]


def test_slicing_filter_and_repeated_access_share_one_image(image_folder):
    ds = Dataset.from_folder(image_folder)
    assert isinstance(ds[:1], Dataset) and ds[:1].ids == ["a.png"]
    assert ds.filter(lambda it: it.image_id.startswith("sub/")).ids == ["sub/b.jpg"]
    assert ds[0].image is ds[0].image  # the editor and the encoder see the same object
    with pytest.raises(KeyError, match="nope"):
        ds["nope"]


def test_with_labels_attaches_by_id(image_folder):
    ds = Dataset.from_folder(image_folder)
    lb = Label.point("a.png", "red", [(0.5, 0.5)])
    out = ds.with_labels([lb])
    assert out["a.png"].labels == (lb,) and out["sub/b.jpg"].labels == ()
    assert out.labels() == [lb] and ds.labels() == []
    stray = Label.point("c.png", "red", [])
    with pytest.raises(ValidationError, match="'c.png'"):
        ds.with_labels([lb, stray])
    assert ds.with_labels([lb, stray], strict=False).labels() == [lb]


def test_frame_rows_grouped_by_image_with_labels(image_folder):
    pd = pytest.importorskip("pandas")
    red = solid((255, 0, 0))
    df = pd.DataFrame({
        "file": ["a.png", "a.png", "sub/b.jpg", red],
        "q": ["What colour?", None, "What colour?", None],
        "a": ["red", None, "green", None],
        "name": [None, "dot", None, "square"],
        "pts": [None, [(0.5, 0.5)], None, [{"x": 0.1, "y": 0.9}]],
        "who": ["ann", "bob", "cy", "dee"],
    })
    ds = from_frame(df, image="file", root=image_folder, question="q", answer="a", object="name", points="pts", meta=["who"])
    assert ds.ids == ["a.png", "sub/b.jpg", image_id_for(red)]
    a = ds["a.png"]
    assert [lb.skill for lb in a.labels] == ["query", "point"]
    assert a.labels[1].target == {"points": [{"x": 0.5, "y": 0.5}]}
    assert a.meta == {"who": "ann"}  # the image's first row
    assert ds[2].labels[0].prompt == "square"


def test_frame_errors_name_column_and_row(image_folder):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"image": ["a.png", "a.png"], "obj": ["x", "y"], "boxes": [[(0, 0, 1, 1)], [(0, 0, 2, 1)]]})
    with pytest.raises(ValidationError, match=r"question='q': no such column.*columns: image, obj, boxes"):
        from_frame(df, question="q", answer="obj")
    with pytest.raises(ValidationError, match=r"frame row 1: target.boxes\[0\].x_max"):
        from_frame(df, root=image_folder, object="obj", boxes="boxes")
    with pytest.raises(ValidationError, match="expected a pandas DataFrame"):
        from_frame([{"image": "a.png"}])


def test_frame_image_id_column(image_folder):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"image": [str(image_folder / "a.png")], "id": ["first"]})
    assert from_frame(df, image_id="id").ids == ["first"]


HAVE_DATASETS = importlib.util.find_spec("datasets") is not None


@pytest.mark.skipif(not HAVE_DATASETS, reason="Hugging Face `datasets` is not installed (optional dependency)")
def test_hf_dataset_lazy_images_and_labels(image_folder):
    import datasets

    red, blue = solid((255, 0, 0)), solid((0, 0, 255))
    hf = datasets.Dataset.from_dict(
        {"image": [red, blue], "question": ["What colour?", "What colour?"], "answer": ["red", "blue"]},
        features=datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                                    "answer": datasets.Value("string")}))
    ds = from_hf(hf, question="question", answer="answer")
    assert len(ds) == 2 and len(set(ds.ids)) == 2
    assert ds[1].image.convert("RGB").getpixel((0, 0)) == (0, 0, 255)
    assert ds[0].labels[0].target == {"answer": "red"}
    assert from_hf(hf, question="question", answer="answer").ids == ds.ids  # stable ids
    paths = datasets.Dataset.from_dict({"path": [str(image_folder / "a.png")]})
    assert from_hf(paths, image="path").ids == [str(image_folder / "a.png").replace(os.sep, "/")]
    with pytest.raises(ValidationError, match="image='img': no such column"):
        from_hf(hf, image="img")


def test_hf_by_name_without_datasets_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # what a machine without it sees on import
    with pytest.raises(ImportError, match="pip install datasets"):
        from_hf("user/some-dataset", split="train")
