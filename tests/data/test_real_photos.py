"""Real photographs through the client's encoding, the data layer and the panels (issue 21):
EXIF-rotated JPEGs, 12-megapixel photos, PNG with alpha, grayscale, 16-bit and CMYK, very wide
and very tall. The photos are scikit-image's (``skimage.data``: shipped, nothing downloaded);
variants are made from them here as a camera or an editor would save them."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the real photos (dev extra)")

from moondream_nb.client.images import ImageEncoder, to_rgb  # noqa: E402
from moondream_nb.data import Dataset  # noqa: E402
from moondream_nb.widgets import ImageCanvas, RolloutReviewer  # noqa: E402

CHELSEA = Image.fromarray(skimage_data.chelsea())  # 451 x 300, a cat
ORIENTATION = 0x0112


def _decoded(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def _similar(a: Image.Image, b: Image.Image, tol: float = 12.0) -> bool:
    """Mean absolute difference per channel below ``tol`` (JPEG round trips are not exact)."""
    if a.size != b.size:
        return False
    return float(np.abs(np.asarray(a.convert("RGB"), float) - np.asarray(b.convert("RGB"), float)).mean()) < tol


@pytest.fixture(scope="module")
def rotated_jpeg(tmp_path_factory) -> bytes:
    """Chelsea as a phone stores a portrait shot: pixels rotated, EXIF orientation 6 (rotate 90° CW to view)."""
    stored = CHELSEA.transpose(Image.Transpose.ROTATE_90)  # what the sensor wrote
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", quality=95, exif=exif)
    return buf.getvalue()


def test_an_exif_rotated_photo_is_upright_for_the_model_the_panels_and_the_dataset(rotated_jpeg, tmp_path):
    sent = _decoded(ImageEncoder().encode(rotated_jpeg).image_url)
    assert sent.size == CHELSEA.size and _similar(sent, CHELSEA)  # the model sees the upright cat
    canvas = ImageCanvas(rotated_jpeg, layers=[{"x_min": 0.3, "y_min": 0.1, "x_max": 0.7, "y_max": 0.6}])
    shown = Image.open(io.BytesIO(canvas._image.data))
    assert canvas.image_size == list(CHELSEA.size) and _similar(shown, CHELSEA)  # the overlay's frame is upright
    path = tmp_path / "portrait.jpg"
    path.write_bytes(rotated_jpeg)
    item = Dataset.from_paths([path])[0]
    assert item.image.size == CHELSEA.size and _similar(item.image, CHELSEA)


def test_a_12_megapixel_photo_sends_a_display_copy_and_keeps_its_size():
    big = CHELSEA.resize((4000, 3000), Image.BICUBIC)
    canvas = ImageCanvas(big)
    shown = Image.open(io.BytesIO(canvas._image.data))
    assert canvas.image_size == [4000, 3000] and max(shown.size) == 2048  # coordinates stay 0-1 of 4000 x 3000
    assert len(canvas._image.data) < 1_200_000  # bytes the canvas sends (JPEG): about 0.4 MB, not 12 MP
    resp = {"request": {"skill": "point", "object": "cat", "image_url": ImageEncoder().encode(big).image_url},
            "rollouts": [{"skill": "point", "output": {"points": [{"x": 0.5, "y": 0.5}]}}]}
    reviewer = RolloutReviewer(resp)
    assert reviewer.image_size == [4000, 3000] and max(Image.open(io.BytesIO(reviewer._image.data)).size) == 1280
    assert len(reviewer._image.data) < 400_000  # the reviewer's 1280-px copy


def _variants() -> dict[str, Image.Image]:
    rgb = np.asarray(CHELSEA)
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, : rgb.shape[1] // 2] = 0  # the left half transparent (its RGB hidden under it is black)
    hidden = rgb.copy()
    hidden[:, : rgb.shape[1] // 2] = 0
    gray16 = (np.asarray(CHELSEA.convert("L"), np.uint16) * 257)  # a 16-bit scan of the same picture
    return {
        "rgba": Image.fromarray(np.dstack([hidden, alpha]), "RGBA"),
        "grayscale": CHELSEA.convert("L"),
        "16-bit": Image.fromarray(gray16),
        "cmyk": CHELSEA.convert("CMYK"),
        "palette": CHELSEA.convert("P", palette=Image.Palette.ADAPTIVE),  # as a GIF holds it
    }


@pytest.mark.parametrize("name", list(_variants()))
def test_every_image_mode_becomes_the_picture_a_person_sees(name):
    image = _variants()[name]
    picture = to_rgb(image)
    assert picture.mode == "RGB" and picture.size == CHELSEA.size
    gray = np.asarray(picture.convert("L"), float)
    # the picture the file holds: the photo itself, except what a 256-colour palette kept of it
    expected = np.asarray((image.convert("RGB") if name == "palette" else CHELSEA).convert("L"), float)
    if name == "rgba":  # transparent over white, not the black hidden under it
        assert gray[:, :200].mean() > 250
        assert np.abs(gray[:, 260:] - expected[:, 260:]).mean() < 3
    else:  # a 16-bit image is not saturated to white (a plain convert("RGB") makes it 99 % white)
        assert np.abs(gray - expected).mean() < 6, name
    sent = _decoded(ImageEncoder().encode(image).image_url)
    assert _similar(sent, picture)  # the model and the panels see the same picture
    canvas = ImageCanvas(image)
    assert _similar(Image.open(io.BytesIO(canvas._image.data)), picture)


@pytest.mark.parametrize("size", [(4000, 100), (100, 4000)], ids=["very-wide", "very-tall"])
def test_very_wide_and_very_tall_photos_keep_their_aspect(size):
    strip = CHELSEA.resize(size)
    canvas = ImageCanvas(strip)
    shown = Image.open(io.BytesIO(canvas._image.data))
    assert canvas.image_size == list(size)
    assert shown.size[0] / shown.size[1] == pytest.approx(size[0] / size[1], rel=0.03) and min(shown.size) >= 51


def test_a_reviewer_from_a_12_megapixel_rotated_response_decodes_small_and_stays_exact():
    """A reviewer built from a response decodes its JPEG data URL at a reduced scale (libjpeg's
    draft: 147 → 48 ms for 4000 x 3000, as fast as from a PIL image) and still reports the upright
    original size, with the same picture as a full decode shrunk to 1280 px."""
    stored = CHELSEA.resize((4000, 3000), Image.BICUBIC).transpose(Image.Transpose.ROTATE_90)  # 3000 x 4000 on disk
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # upright it is 4000 wide
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", quality=92, exif=exif)
    url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    resp = {"request": {"skill": "point", "object": "cat", "image_url": url},
            "rollouts": [{"skill": "point", "output": {"points": [{"x": 0.25, "y": 0.5}]}}]}
    reviewer = RolloutReviewer(resp)
    shown = Image.open(io.BytesIO(reviewer._image.data))
    assert reviewer.image_size == [4000, 3000] and shown.size == (1280, 960)
    assert max(reviewer.pil_image.size) <= 2000  # decoded at half scale (it was 4000 px) ...
    full = to_rgb(Image.open(io.BytesIO(buf.getvalue()))).resize((1280, 960), Image.BILINEAR)
    assert _similar(shown, full, tol=6.0)  # ... the same upright picture
