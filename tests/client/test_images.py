"""Image inputs, EXIF orientation, and the encode-once cache."""

from __future__ import annotations

import base64
import gc
import io
import os
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import moondream_nb as md
from moondream_nb.client.images import ImageEncoder


def decode(url: str) -> Image.Image:
    assert url.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


@pytest.fixture
def jpeg_saves(monkeypatch):
    """Counts real JPEG encodes done by PIL."""
    count = [0]
    original = Image.Image.save

    def save(self, fp, format=None, **params):
        if (format or "").upper() == "JPEG":
            count[0] += 1
        return original(self, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", save)
    return count


def test_one_encode_across_rollouts_stream_train_step_and_inference(peer, tuning, image, jpeg_saves):
    for _ in range(5):
        tuning.rollouts("point", image=image, object="x", num_rollouts=2)
    items = [(i, {"skill": "detect", "image": image, "object": "y"}) for i in range(8)]
    results = list(tuning.rollout_stream(items, max_concurrency=4))
    group = {"mode": "sft", "request": {"skill": "point", "object": "x", "image": image}, "target": {"points": []}}
    tuning.train_step([group, group])
    tuning.vl().query(image, "what?")
    assert jpeg_saves[0] == 1 and tuning.images.encodes == 1
    urls = {r.json["request"]["image_url"] for r in peer.requests("POST", r".*/rollouts")}
    urls |= {g["request"]["image_url"] for g in peer.requests("POST", r".*/train_step")[0].json["groups"]}
    urls.add(peer.requests("POST", "/v1/query")[0].json["image_url"])
    assert len(urls) == 1 and len(results) == 8


def test_concurrent_requests_for_one_image_encode_once(image, jpeg_saves):
    enc = ImageEncoder()
    big = image.resize((800, 600))
    out = []
    threads = [threading.Thread(target=lambda: out.append(enc.encode(big))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert jpeg_saves[0] == 1 and len({o.image_url for o in out}) == 1


def test_in_place_edit_is_noticed(image):
    enc = ImageEncoder()
    first = enc.encode(image)
    assert enc.encode(image) is first
    image.paste((0, 255, 0), (0, 0, 64, 48))
    second = enc.encode(image)
    assert second.image_url != first.image_url and enc.encodes == 2
    assert decode(second.image_url).getpixel((30, 20))[1] > 200


def test_dropped_image_frees_its_entry():
    enc = ImageEncoder()
    img = Image.new("RGB", (32, 32), "white")
    enc.encode(img)
    assert len(enc) == 1
    del img
    gc.collect()
    enc.encode(Image.new("RGB", (8, 8)))  # any call purges dead entries
    assert len(enc) == 1


def test_cache_is_bounded():
    enc = ImageEncoder(max_items=3)
    keep = [Image.new("RGB", (16, 16), (i * 40, 0, 0)) for i in range(5)]
    for img in keep:
        enc.encode(img)
    assert len(enc) == 3
    enc.encode(keep[0])  # evicted, so encoded again
    assert enc.encodes == 6
    small = ImageEncoder(max_bytes=1)
    small.encode(keep[1])
    assert len(small) == 0


def test_paths_bytes_and_changed_files(tmp_path, image, jpeg_saves):
    path = tmp_path / "a.png"
    image.save(path)
    enc = ImageEncoder()
    a = enc.encode(str(path))
    assert enc.encode(path) is a  # str and Path are the same file
    data = path.read_bytes()
    b = enc.encode(data)
    assert enc.encode(bytearray(data)) is b and b.image_url == a.image_url
    assert enc.encodes == 2
    Image.new("RGB", (64, 48), "yellow").save(path)
    os.utime(path, ns=(1, 1))
    c = enc.encode(path)
    assert c.image_url != a.image_url and enc.encodes == 3
    with pytest.raises(md.ValidationError, match="cannot decode"):
        enc.encode(b"not an image")


def test_numpy_arrays():
    enc = ImageEncoder()
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[:, :20] = (255, 0, 0)
    img = decode(enc.encode(rgb).image_url)
    assert img.size == (40, 30)
    assert img.getpixel((5, 5))[0] > 200 and img.getpixel((35, 5))[0] < 50
    assert enc.encode(rgb.copy()).image_url == enc.encode(rgb).image_url and enc.encodes == 1
    assert decode(enc.encode(np.full((10, 12), 128, np.uint8)).image_url).mode == "RGB"
    assert decode(enc.encode(np.zeros((10, 12, 4), np.uint8)).image_url).size == (12, 10)
    assert decode(enc.encode(np.zeros((10, 12, 1), np.uint8)).image_url).size == (12, 10)
    assert enc.encode(rgb[:, ::2]).image_url  # non-contiguous views work
    with pytest.raises(md.ValidationError, match="uint8"):
        enc.encode(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(md.ValidationError, match="HxW"):
        enc.encode(np.zeros((10, 10, 2), np.uint8))


def test_exif_orientation_is_applied():
    src = Image.new("RGB", (40, 20), "white")
    src.paste((0, 0, 0), (0, 0, 10, 20))  # black stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; displays turned 90 degrees clockwise
    buf = io.BytesIO()
    src.save(buf, format="JPEG", exif=exif.tobytes())
    img = decode(ImageEncoder().encode(buf.getvalue()).image_url)
    assert img.size == (20, 40)
    assert sum(img.getpixel((10, 3))) < 100 and sum(img.getpixel((10, 36))) > 600  # stripe now on top
    assert ImageEncoder().encode(Image.open(io.BytesIO(buf.getvalue()))).image_url == \
        ImageEncoder().encode(buf.getvalue()).image_url


def test_modes_become_rgb():
    enc = ImageEncoder()
    for img in (Image.new("RGBA", (8, 8), (1, 2, 3, 0)), Image.new("P", (8, 8)), Image.new("L", (8, 8))):
        assert decode(enc.encode(img).image_url).mode == "RGB"


def test_same_bytes_as_the_official_client(image):
    from moondream.finetune import _encode_image  # the reference client (installed by .ci/run)

    for img in (image, image.convert("RGBA"), Image.new("L", (33, 17), 99)):
        assert ImageEncoder().encode(img).image_url == _encode_image(img).image_url


def test_already_encoded_inputs():
    from moondream.types import Base64EncodedImage

    enc = ImageEncoder()
    url = "data:image/png;base64,iVBORw0KGgo="
    ours = md.EncodedImage(url)
    assert enc.encode(ours) is ours
    assert enc.encode(Base64EncodedImage(image_url=url)).image_url == url
    assert enc.encode(SimpleNamespace(image_url=url)).image_url == url
    assert enc.encode(url).image_url == url
    assert enc.encodes == 0
    with pytest.raises(md.ValidationError, match="remote image URLs"):
        enc.encode("https://example.com/cat.jpg")
    assert repr(ours) == "EncodedImage(image/png, 0.0 KiB)"
    assert repr(enc.encode(Image.new("RGB", (4, 4)))).startswith("EncodedImage(image/jpeg, ")
