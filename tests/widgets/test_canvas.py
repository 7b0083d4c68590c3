"""ImageCanvas on the Python side: layers validation and round trip, image sent once, modes."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from moondream_nb.errors import ValidationError
from moondream_nb.widgets import ImageCanvas


def test_layers_normalized_from_list_and_api_dict(scene):
    c = ImageCanvas(scene.image, layers={"points": [{"x": 0.1, "y": 0.2}], "boxes": [scene.objects[0].box_dict]})
    assert c.layers[0] == {"type": "point", "x": 0.1, "y": 0.2}
    assert c.layers[1]["type"] == "box" and c.boxes == [scene.objects[0].box_dict]
    assert c.points == [{"x": 0.1, "y": 0.2}]
    c.layers = [{"x": 0.5, "y": 0.5, "color": "#f00", "label": "a"}]
    assert c.layers == [{"type": "point", "x": 0.5, "y": 0.5, "color": "#f00", "label": "a"}]


@pytest.mark.parametrize("layers, field", [
    ([{"x": 1.5, "y": 0.1}], "layers[0].x"),
    ([{"x": 0.1}], "layers[0].y"),
    ([{"x_min": 0.6, "y_min": 0.1, "x_max": 0.2, "y_max": 0.3}], "layers[0]"),
    ([{"type": "polygon", "x": 0.1, "y": 0.1}], "layers[0].type"),
    ([{"x": 0.1, "y": 0.1, "label": 3}], "layers[0].label"),
    ({"boxes": [{"x_min": 0, "y_min": 0, "x_max": 2, "y_max": 1}]}, "layers.boxes[0].x_max"),
    ("points", "layers"),
])
def test_bad_layers_name_the_field(scene, layers, field):
    with pytest.raises(ValidationError) as err:
        ImageCanvas(scene.image, layers=layers)
    assert str(err.value).startswith(field + ":")
    c = ImageCanvas(scene.image)
    with pytest.raises(ValidationError):
        c.layers = layers  # the same check guards updates (from Python or the browser)
    assert c.layers == []


def test_mode_validated(scene):
    with pytest.raises(ValidationError, match="^mode:"):
        ImageCanvas(scene.image, mode="draw")
    with pytest.raises(ValidationError, match=r"^modes\[1\]:"):
        ImageCanvas(scene.image, modes=["point", "paint"])


def test_image_sent_once_and_downscaled_keeping_size():
    big = Image.new("RGB", (4096, 3072), (10, 200, 30))
    c = ImageCanvas(big, layers=[{"x": 0.9, "y": 0.9}], mode="point")
    assert c.image_size == [4096, 3072]  # the original size: coordinates stay normalized
    shown = Image.open(io.BytesIO(c._image.data))
    assert shown.size == (2048, 1536) and c._image.mime == "image/jpeg"
    sent = []
    c.observe(lambda ch: sent.append(ch["name"]), names=["_image"])
    c.layers = [{"x": 0.1, "y": 0.1}]
    c.mode = "box"
    assert sent == []  # state updates never resend the image


def test_image_inputs(tmp_path, scene):
    path = tmp_path / "scene.png"
    scene.image.save(path)
    from_path = ImageCanvas(str(path))
    from_bytes = ImageCanvas(path.read_bytes())
    assert from_path.image_size == from_bytes.image_size == list(scene.image.size)
    rgba = Image.new("RGBA", (30, 20), (1, 2, 3, 100))
    shown = ImageCanvas(rgba)  # what the model sees: transparency over white (it used to keep alpha,
    assert shown._image.mime == "image/jpeg"  # so the page showed one picture and the model another)
    assert Image.open(io.BytesIO(shown._image.data)).getpixel((5, 5)) == pytest.approx((156, 157, 157), abs=3)
    with pytest.raises(ValidationError, match="^image:"):
        ImageCanvas(12345)


def test_static_fallback_and_figure(scene):
    c = ImageCanvas(scene.image, layers=[scene.objects[0].box_dict, {"x": 0.5, "y": 0.5}])
    data, _meta = c._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    assert "image/png" not in data  # a photo panel falls back to a (much smaller) JPEG
    preview = Image.open(io.BytesIO(data["image/jpeg"])).convert("RGB")
    assert preview.size == scene.image.size
    # the box outline is drawn: the middle of its top edge is the draw colour (JPEG: roughly)
    x0, y0, x1, _ = scene.objects[0].box
    pixel = preview.getpixel((round((x0 + x1) / 2 * preview.width), round(y0 * preview.height)))
    assert all(abs(a - b) < 60 for a, b in zip(pixel, (255, 204, 0))), pixel
    fig = c.to_figure()
    assert len(fig.axes) == 1 and len(fig.axes[0].patches) == 1
    c.static_fallback = False
    assert set(c._repr_mimebundle_()[0]) == {"text/plain", "application/vnd.jupyter.widget-view+json"}


def test_clear(scene):
    c = ImageCanvas(scene.image, layers=[{"x": 0.1, "y": 0.1}])
    c.selected = 0
    c.clear()
    assert c.layers == [] and c.selected == -1


def test_numpy_and_data_url_inputs(scene):
    import numpy as np

    from moondream_nb.client.images import ImageEncoder

    arr = np.zeros((30, 40, 3), dtype=np.uint8)
    assert ImageCanvas(arr).image_size == [40, 30]
    with pytest.raises(ValidationError, match="^image: numpy images must be uint8"):
        ImageCanvas(arr.astype("float32"))
    url = ImageEncoder().encode(scene.image).image_url
    assert ImageCanvas(url).image_size == list(scene.image.size)
    with pytest.raises(ValidationError, match="^image: cannot decode"):
        ImageCanvas(b"not an image")
    with pytest.raises(ValidationError, match="^image: cannot read image file"):
        ImageCanvas("/nonexistent.png")
