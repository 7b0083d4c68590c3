from __future__ import annotations

import pytest
from PIL import Image


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("RGB", size, colour)


@pytest.fixture
def image_folder(tmp_path):
    """imgs/a.png (40x30 red), imgs/sub/b.jpg (20x50 green), plus a hidden file and a text file."""
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    (root / ".ipynb_checkpoints").mkdir()
    solid((255, 0, 0)).save(root / "a.png")
    solid((0, 255, 0), (20, 50)).save(root / "sub" / "b.jpg")
    solid((0, 0, 255)).save(root / ".ipynb_checkpoints" / "a-checkpoint.png")
    (root / "notes.txt").write_text("not an image")
    return root
