"""Hostile datasets: one test per row of the table in docs/images.md. Each case has a defined outcome:
the image loads correctly, the file is skipped with a warning that names it and a logged count,
or the run stops with an error that says what to fix."""

import logging
import os
import struct
import zlib

import numpy as np
import torch
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from tests.conftest import compose_cfg, make_image_folder
from tl.data import checks, datasets
from tl.data.imagefiles import load_rgb
from tl.errors import DataError
from tl.models.backbones import DataConfig
from tl.train import train

DATA = DataConfig(32, 36, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")


def splits(root, **extra):
    cfg = compose_cfg("dataset=imagefolder", f"dataset.root={root}",
                      *[f"dataset.{k}={v}" for k, v in extra.items()])
    return datasets.build_splits(cfg.dataset, DATA)


def skipped(s) -> dict[str, str]:
    return {p.name: why for p, why in s.skipped}


def png(path, width, height, bit_depth, color_type, rows: bytes = b"") -> None:
    """A PNG written by hand: PIL cannot write 16-bit RGB, nor a header without its pixels."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def png16(path, pixels: np.ndarray) -> None:
    """16-bit grayscale (H, W) or RGB (H, W, 3)."""
    color_type = 2 if pixels.ndim == 3 else 0
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    png(path, pixels.shape[1], pixels.shape[0], 16, color_type, rows)


def test_zero_byte_files_are_skipped_and_named(tmp_path, caplog):
    root = make_image_folder(tmp_path / "d")
    (root / "train" / "ants" / "empty.jpg").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        s = splits(root)
    assert skipped(s) == {"empty.jpg": "empty file (0 bytes)"}
    assert "skipping 1 unreadable file(s)" in caplog.text and "empty.jpg" in caplog.text


def test_truncated_jpegs_are_skipped(tmp_path):
    root = make_image_folder(tmp_path / "d")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(
        tmp_path / "whole.jpg", quality=95)
    whole = (tmp_path / "whole.jpg").read_bytes()
    (root / "train" / "bees" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    s = splits(root)
    assert "truncated" in skipped(s)["cut.jpg"]
    assert len(s.train) == 16


def test_non_image_files_in_class_folders_are_skipped(tmp_path):
    root = make_image_folder(tmp_path / "d")
    (root / "train" / "ants" / "notes.txt").write_text("labelled by Ann")
    (root / "train" / "ants" / "fake.jpg").write_text("<html>404 not found</html>")
    reasons = skipped(splits(root))
    assert reasons["notes.txt"] == "not an image file extension (.txt)"
    assert reasons["fake.jpg"].startswith("UnidentifiedImageError")


def test_hidden_files_and_folders_are_ignored_without_a_warning(tmp_path, caplog):
    root = make_image_folder(tmp_path / "d")
    (root / "train" / "ants" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "train" / "ants" / "._ants_0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "train" / "ants" / ".ipynb_checkpoints").mkdir()
    (root / "train" / "ants" / ".ipynb_checkpoints" / "x.png").write_bytes(b"")
    (root / "train" / ".Trashes").mkdir()
    with caplog.at_level(logging.WARNING):
        s = splits(root)
    assert s.classes == ["ants", "bees"] and not s.skipped and len(s.train) == 16
    assert "skipping" not in caplog.text


@pytest.mark.parametrize("name,make,rgb", [
    ("gray.png", lambda p: Image.new("L", (4, 4), 100).save(p), (100, 100, 100)),
    ("cmyk.jpg", lambda p: Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(p, quality=100), (255, 0, 0)),
    ("rgba.png", lambda p: Image.new("RGBA", (4, 4), (10, 20, 30, 128)).save(p), (10, 20, 30)),
    ("palette.gif", lambda p: Image.new("P", (4, 4), 1).save(p), None),
    ("gray16.png", lambda p: png16(p, np.full((4, 4), 0x8080)), (128, 128, 128)),
    ("rgb16.png", lambda p: png16(p, np.full((4, 4, 3), [0xFFFF, 0x8080, 0x0000])), (255, 128, 0)),
])
def test_every_image_mode_loads_as_8_bit_rgb(tmp_path, name, make, rgb):
    path = tmp_path / name
    make(path)
    im = load_rgb(path)
    assert im.mode == "RGB" and im.size[0] >= 4
    if rgb is not None:
        assert np.allclose(np.asarray(im)[1, 1], rgb, atol=2), np.asarray(im)[1, 1]


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)
    png16(tmp_path / "ramp.png", ramp)
    got = np.asarray(load_rgb(tmp_path / "ramp.png"))[..., 0]
    assert got.min() == 0 and got.max() == 255
    assert np.abs(got.astype(int) - np.rint(ramp / 257)).max() <= 1  # not 255 from 256 upwards


def test_images_over_the_decompression_bomb_limit_are_skipped_and_named(tmp_path):
    root = make_image_folder(tmp_path / "d")
    png(root / "train" / "ants" / "huge.png", 10_000, 10_000, 8, 2)  # a header, no pixels
    reason = skipped(splits(root))["huge.png"]
    assert "decompression-bomb limit" in reason and "100000000 pixels" in reason


def test_images_smaller_than_the_crop_are_upscaled(tmp_path):
    root = make_image_folder(tmp_path / "d", size=2)
    Image.new("RGB", (1, 1), (200, 0, 0)).save(root / "train" / "ants" / "dot.png")
    Image.new("RGB", (1, 7), (200, 0, 0)).save(root / "val" / "ants" / "sliver.png")
    s = splits(root)
    assert not s.skipped
    for ds in (s.train, s.val):
        for i in range(len(ds)):
            assert tuple(ds[i][0].shape) == (3, 32, 32)


def test_symlinks_to_files_and_folders_are_followed_broken_ones_skipped(tmp_path):
    root = make_image_folder(tmp_path / "d")
    extra = make_image_folder(tmp_path / "elsewhere", classes=("more",), n_train=3, n_val=0)
    ants = root / "train" / "ants"
    (ants / "link.png").symlink_to(ants / "ants_0.png")
    (ants / "linked_folder").symlink_to(extra / "train" / "more", target_is_directory=True)
    (ants / "loop").symlink_to(ants, target_is_directory=True)
    (ants / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    (root / "val" / "bees").rename(tmp_path / "bees_val")
    (root / "val" / "bees").symlink_to(tmp_path / "bees_val", target_is_directory=True)
    s = splits(root)
    names = [p.name for p, y in s.train.samples if y == 0]
    assert "link.png" in names and sum(n.startswith("more_") for n in names) == 3
    assert len(names) == 8 + 1 + 3  # the loop added nothing
    assert skipped(s) == {"gone.jpg": f"broken symlink (to {tmp_path / 'deleted.jpg'})"}
    assert sum(y == 1 for _, y in s.val.samples) == 4


def test_unicode_and_non_utf8_file_names_load(tmp_path):
    root = make_image_folder(tmp_path / "d")
    ants = os.fsencode(root / "train" / "ants")
    Image.new("RGB", (8, 8)).save(os.fsdecode(ants + "/fourmi_é_蟻.png".encode()))
    Image.new("RGB", (8, 8)).save(os.fsdecode(ants + b"/latin1_caf\xe9.png"))
    os.makedirs(os.fsencode(root / "train") + b"/b\xe9es")  # a Latin-1 class folder name
    os.makedirs(os.fsencode(root / "val") + b"/b\xe9es")
    for split in (b"train", b"val"):
        Image.new("RGB", (8, 8), (0, 0, 255)).save(
            os.fsdecode(os.fsencode(root) + b"/" + split + b"/b\xe9es/x.png"))
    s = splits(root)
    assert len(s.classes) == 3 and not s.skipped
    names = {os.fsencode(p.name) for p, _ in s.train.samples}
    assert "fourmi_é_蟻.png".encode() in names and b"latin1_caf\xe9.png" in names
    for i in range(len(s.train)):
        s.train[i]


def test_an_empty_class_folder_is_an_error_naming_it(tmp_path):
    root = make_image_folder(tmp_path / "d")
    (root / "train" / "wasps").mkdir()
    (root / "val" / "wasps").mkdir()
    with pytest.raises(DataError, match=r"class folder\(s\) \['wasps'\] .* have no readable training images"):
        splits(root)


def test_a_val_split_missing_a_class_warns_and_counts_it(tmp_path, caplog):
    root = make_image_folder(tmp_path / "d", classes=("ants", "bees", "wasps"))
    for f in (root / "val" / "wasps").iterdir():
        f.unlink()
    (root / "val" / "wasps").rmdir()
    s = splits(root)
    with caplog.at_level(logging.WARNING):
        report = checks.check(s)
    assert s.classes == ["ants", "bees", "wasps"]
    assert report.metrics["val_missing_classes"] == 1
    assert "no images of 1 class(es) ['wasps']" in caplog.text


def test_a_class_only_in_val_is_an_error_naming_it(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=("ants", "bees"))
    (root / "val" / "bees").rename(root / "val" / "wasps")
    with pytest.raises(DataError, match=r"only in val/, not in train/: \['wasps'\]"):
        splits(root)


def test_duplicates_across_train_and_val_are_counted_as_leakage(tmp_path, caplog):
    root = make_image_folder(tmp_path / "d")
    for i in (0, 1):
        (root / "val" / "ants" / f"copy_{i}.png").write_bytes((root / "train" / "ants" / f"ants_{i * 2}.png").read_bytes())
    with caplog.at_level(logging.WARNING):
        report = checks.check(splits(root))
    assert report.metrics["train_val_duplicates"] == 2
    assert "copy_0.png\t" in report.files["train_val_duplicates.txt"]
    assert "2 val image(s) are byte-identical to train images (train/val leakage" in caplog.text


def test_data_findings_are_logged_with_the_run(fast_overrides, tiny_data, store):
    (tiny_data / "val" / "ants" / "leak.png").write_bytes((tiny_data / "train" / "ants" / "ants_0.png").read_bytes())
    os.symlink("nowhere.jpg", os.fsencode(tiny_data / "train" / "bees") + b"/broken_caf\xe9.jpg")
    for j, split in enumerate((b"train", b"val")):  # a class folder named in Latin-1, not UTF-8
        folder = os.fsencode(tiny_data) + b"/" + split + b"/gu\xeapes"
        os.makedirs(folder)
        for i in range(2):
            Image.new("RGB", (8, 8), (0, 2 * i + j, 255)).save(os.fsdecode(folder + b"/%d.png" % i))
    train(compose_cfg(*fast_overrides, "trainer.epochs=1"))
    client = MlflowClient(store)
    run = client.search_runs([client.get_experiment_by_name("tl").experiment_id])[0]
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    assert (m["skipped_files"], m["train_val_duplicates"], m["val_missing_classes"]) == (1, 1, 0)
    assert run.data.params["data.classes"] == "ants,bees,gu\\xeapes"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"skipped_files.txt", "train_val_duplicates.txt"} <= artifacts
    text = open(client.download_artifacts(run.info.run_id, "skipped_files.txt"), encoding="utf-8").read()
    assert "broken_caf\\xe9.jpg\tbroken symlink" in text


def test_duplicates_across_val_and_test_are_counted_and_listed(tmp_path, caplog):
    root = make_image_folder(tmp_path / "d")
    make_image_folder(tmp_path / "t", n_train=3, n_val=0, seed=5)
    os.rename(tmp_path / "t" / "train", root / "test")
    (root / "test" / "bees" / "twin.png").write_bytes((root / "val" / "bees" / "bees_0.png").read_bytes())
    with caplog.at_level(logging.WARNING):
        report = checks.check(splits(root))
    assert (report.metrics["val_test_duplicates"], report.metrics["train_test_duplicates"]) == (1, 0)
    assert report.files["val_test_duplicates.txt"].startswith(f"{root / 'test' / 'bees' / 'twin.png'}\t")
    assert "1 test image(s) are byte-identical to val images (val/test leakage" in caplog.text


def sideways_jpeg(path, orientation=6) -> np.ndarray:
    """A 32x16 photo stored sideways, as phones store them: EXIF says rotate it for display.
    Returns the pixels as they are meant to be seen."""
    rng = np.random.default_rng(0)
    stored = np.zeros((16, 32, 3), dtype=np.uint8)
    stored[:, :16] = (250, 10, 10)  # left half red, right half blue: rotation shows
    stored[:, 16:] = (10, 10, 250)
    stored = np.clip(stored.astype(int) + rng.integers(-3, 3, stored.shape), 0, 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, quality=95, exif=exif.tobytes())
    from PIL import ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def test_exif_orientation_is_applied_when_streaming_and_when_decoding_once(tmp_path):
    from tl.data import decoded

    want = sideways_jpeg(tmp_path / "phone.jpg")
    assert want.shape == (32, 16, 3)
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "phone.jpg")), want)
    assert np.array_equal(decoded.decode(tmp_path / "phone.jpg", 64).permute(1, 2, 0).numpy(), want)


def test_exif_orientation_reaches_the_images_a_run_trains_on(tmp_path):
    root = make_image_folder(tmp_path / "d")
    sideways_jpeg(root / "train" / "ants" / "phone.jpg", orientation=8)
    cfg = compose_cfg("dataset=imagefolder", f"dataset.root={root}")
    for cache_mb in (0, 64):  # streamed from disk; decoded once into memory
        s = datasets.build_splits(cfg.dataset, DataConfig(16, 16, (0, 0, 0), (1, 1, 1), "bilinear"), cache_mb)
        i = [p.name for p, _ in s.train.samples].index("phone.jpg")
        s.train.transform = datasets.val_transform(DataConfig(16, 16, (0, 0, 0), (1, 1, 1), "bilinear"))
        x = s.train[i][0].as_subclass(torch.Tensor).float()
        # Stored left red / right blue; turned 90 degrees it is red at the bottom, blue on top.
        top, bottom = x[:, :4].mean(dim=(1, 2)), x[:, -4:].mean(dim=(1, 2))
        assert top[2] > 200 and bottom[0] > 200, (cache_mb, top, bottom)


def test_jpegs_with_corrupted_bytes_mid_file_are_skipped_and_named(tmp_path, caplog):
    root = make_image_folder(tmp_path / "d")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        tmp_path / "whole.jpg", quality=90)
    data = bytearray((tmp_path / "whole.jpg").read_bytes())
    middle = len(data) // 2
    data[middle:middle + 32] = np.random.default_rng(0).integers(0, 255, 32, dtype=np.uint8).tobytes()
    (root / "train" / "bees" / "damaged.jpg").write_bytes(bytes(data))
    with Image.open(root / "train" / "bees" / "damaged.jpg") as im:
        im.load()  # PIL decodes it without a word
    with caplog.at_level(logging.WARNING):
        s = splits(root)
    assert skipped(s)["damaged.jpg"].startswith("corrupt JPEG data (")
    assert len(s.train) == 16 and "damaged.jpg" in caplog.text


@pytest.mark.parametrize("ext", [".jfif", ".jpe", ".JPEG", ".tif", ".webp", ".bmp"])
def test_every_common_image_extension_is_read(tmp_path, ext):
    root = make_image_folder(tmp_path / "d")
    fmt = {".jfif": "JPEG", ".jpe": "JPEG", ".JPEG": "JPEG", ".tif": "TIFF", ".webp": "WEBP", ".bmp": "BMP"}[ext]
    Image.new("RGB", (8, 8), (200, 0, 0)).save(root / "train" / "ants" / f"extra{ext}", format=fmt)
    s = splits(root)
    assert not s.skipped and f"extra{ext}" in [p.name for p, _ in s.train.samples]


@pytest.mark.parametrize("name,make,rgb", [
    ("bilevel.png", lambda p: Image.new("1", (4, 4), 1).save(p), (255, 255, 255)),
    ("gray_alpha.png", lambda p: Image.new("LA", (4, 4), (90, 200)).save(p), (90, 90, 90)),
    ("palette_transparent.png", lambda p: _transparent_palette(p), (0, 0, 255)),
    ("gray16.tif", lambda p: Image.fromarray(np.full((4, 4), 0x8080, dtype=np.uint16)).save(p), (128, 128, 128)),
    ("cmyk.tif", lambda p: Image.new("CMYK", (4, 4), (255, 0, 255, 0)).save(p), (0, 255, 0)),
])
def test_more_image_modes_load_as_8_bit_rgb(tmp_path, name, make, rgb):
    path = tmp_path / name
    make(path)
    im = load_rgb(path)
    assert im.mode == "RGB"
    assert np.allclose(np.asarray(im)[1, 1], rgb, atol=2), np.asarray(im)[1, 1]


def _transparent_palette(path):
    im = Image.new("P", (4, 4), 1)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.save(path, transparency=0)


def test_float_images_in_unit_range_load_as_fractions_of_white(tmp_path):
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(tmp_path / "unit.tif")
    assert tuple(np.asarray(load_rgb(tmp_path / "unit.tif"))[1, 1]) == (128, 128, 128)


def test_float_images_in_another_range_are_skipped_naming_the_range(tmp_path):
    root = make_image_folder(tmp_path / "d")
    ct = np.linspace(-1000, 3000, 64, dtype=np.float32).reshape(8, 8)  # Hounsfield units
    Image.fromarray(ct).save(root / "train" / "ants" / "ct.tif")
    reason = skipped(splits(root))["ct.tif"]
    assert "32-bit float pixels from -1000 to 3000" in reason and "convert it to 8 or 16 bits" in reason


def test_a_rescan_of_unchanged_files_decodes_none_and_an_edited_file_is_checked_again(tmp_path, monkeypatch):
    from tl.data import imagefiles

    root = make_image_folder(tmp_path / "d", n_train=3, n_val=1)
    first = imagefiles.scan(root / "train")
    calls = []
    real = imagefiles.check_images
    monkeypatch.setattr(imagefiles, "check_images", lambda ps: calls.extend(ps) or real(ps))
    again = imagefiles.scan(root / "train")
    assert (again.samples, again.skipped) == (first.samples, first.skipped) and calls == []

    edited = first.samples[0][0]
    edited.write_bytes(b"not an image any more")
    after = imagefiles.scan(root / "train")
    assert edited in [p for p, _ in after.skipped] and edited in calls
