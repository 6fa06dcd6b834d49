"""Data sets: built-ins and the image-folder loader, including its errors."""
import numpy as np
import pytest
from PIL import Image

from kakusan import KakusanError
from kakusan.data import load_dataset, tokens_for_labels


def write_png(path, size=(12, 12), value=128, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1] + ((3,) if mode == "RGB" else ()), value, np.uint8), mode).save(path)


def test_mnist_is_balanced_and_in_range():
    d = load_dataset("mnist")
    assert d.images.shape == (5000, 1, 32, 32)
    assert d.images.min() == -1 and d.images.max() == 1
    assert d.labels.bincount().tolist() == [500] * 10


def test_digits_resized():
    d = load_dataset("digits", image_size=16)
    assert d.images.shape == (1797, 1, 16, 16) and d.num_classes == 10


def test_folder_with_class_subfolders(tmp_path):
    write_png(tmp_path / "cat" / "a.png", value=0)
    write_png(tmp_path / "dog" / "b.png", value=255)
    write_png(tmp_path / "dog" / "c.jpg", value=255)
    d = load_dataset(str(tmp_path), image_size=8, channels=1)
    assert d.class_names == ["cat", "dog"] and d.labels.tolist() == [0, 1, 1]
    assert d.images.shape == (3, 1, 8, 8)
    assert float(d.images[0].mean()) == pytest.approx(-1) and float(d.images[1].mean()) == pytest.approx(1)


def test_folder_rgb_without_resize_keeps_size(tmp_path):
    write_png(tmp_path / "x.png", size=(10, 6), mode="RGB")
    d = load_dataset(str(tmp_path), image_size=None, channels=3)
    assert d.images.shape == (1, 3, 6, 10) and d.labels is None


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(KakusanError, match="no images"):
        load_dataset(str(tmp_path))


def test_unreadable_image_names_the_file(tmp_path):
    write_png(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(KakusanError, match="broken.png"):
        load_dataset(str(tmp_path), image_size=8)


def test_mixed_sizes_need_a_resize(tmp_path):
    write_png(tmp_path / "a.png", size=(12, 12))
    write_png(tmp_path / "b.png", size=(16, 12))
    with pytest.raises(KakusanError, match="b.png"):
        load_dataset(str(tmp_path), image_size=None)
    assert load_dataset(str(tmp_path), image_size=8).images.shape == (2, 3, 8, 8)


def test_missing_path_is_an_error():
    with pytest.raises(KakusanError, match="neither a built-in"):
        load_dataset("/no/such/folder")


def test_tokens_for_labels():
    import torch
    assert tokens_for_labels(torch.tensor([0, 3])).tolist() == [[1, 2], [1, 5]]
