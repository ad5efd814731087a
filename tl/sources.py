"""Where each dataset's files come from: an existing folder, a verified download, or a
bundled dataset written out once."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from tl.errors import DataError

log = logging.getLogger(__name__)


def tree_sha256(root: Path) -> str:
    """One digest for a folder tree: sha256 over sorted `relative path<TAB>file sha256` lines."""
    lines = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            lines.append(f"{rel}\t{hashlib.sha256(p.read_bytes()).hexdigest()}\n")
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


def download_zip_tree(url: str, dest: Path, folder: str, sha256: str | None) -> Path:
    """Download `url`, unzip it, check the `folder` it holds against `sha256`, move it to `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmp:
        archive = Path(tmp) / "archive.zip"
        try:
            log.info("downloading %s", url)
            urllib.request.urlretrieve(url, archive)  # noqa: S310 - URL comes from the config
        except Exception as e:
            raise DataError(
                f"dataset.root={str(dest)!r} does not exist and downloading {url} failed "
                f"({type(e).__name__}: {e}). Offline? Download and unzip it elsewhere, then put "
                f"the '{folder}' folder at {dest} or set dataset.root to where it is."
            ) from None
        try:
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
        except zipfile.BadZipFile as e:
            raise DataError(f"{url} did not download as a zip archive ({e})") from None
        extracted = Path(tmp) / folder
        if not extracted.is_dir():
            raise DataError(f"{url} holds no '{folder}' folder")
        if sha256:
            got = tree_sha256(extracted)
            if got != sha256:
                raise DataError(f"{url} content checksum {got} != expected {sha256}: a corrupt "
                                "or changed download; nothing was written")
        os.replace(extracted, dest)  # atomic: a half-extracted tree is never mistaken for data
    return dest


def ensure_hymenoptera(cfg, root: Path) -> Path:
    if root.exists():
        return root
    if not cfg.get("download", True):
        raise DataError(f"dataset.root={str(root)!r} does not exist and dataset.download=false: "
                        "put hymenoptera_data there or set dataset.root")
    return download_zip_tree(cfg.url, root, "hymenoptera_data", cfg.get("content_sha256"))


def ensure_digits(root: Path, image_size: int) -> Path:
    """scikit-learn's 8x8 digits as PNG class folders, written once (atomically)."""
    marker = root / f".tl-digits-{image_size}px"
    if marker.exists():
        return root
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=".digits-"))
    for i, (img, label) in enumerate(zip(digits.images, digits.target)):
        folder = tmp / str(label)
        folder.mkdir(exist_ok=True)
        pixels = (img * (255.0 / 16.0)).round().astype("uint8")
        Image.fromarray(pixels, mode="L").resize((image_size, image_size), Image.BICUBIC).save(
            folder / f"{i:04d}.png"
        )
    (tmp / marker.name).touch()
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)
    return root


def load_cifar10(root: Path, download: bool):
    import torchvision

    try:
        train = torchvision.datasets.CIFAR10(str(root), train=True, download=download)
        val = torchvision.datasets.CIFAR10(str(root), train=False, download=download)
    except Exception as e:
        raise DataError(
            f"CIFAR-10 is not at dataset.root={str(root)!r} and could not be downloaded "
            f"({type(e).__name__}: {e}). Offline? Put the extracted 'cifar-10-batches-py' folder "
            "there."
        ) from None
    return train, val


def tree_fingerprint(root: Path) -> str:
    """A cheap identity for a folder's content: sha256 over (path, size, mtime) of every file.
    Any added, removed, replaced or touched file changes it."""
    lines = []
    for dirpath, _, filenames in os.walk(root, followlinks=True):
        for name in filenames:
            p = Path(dirpath) / name
            try:
                st = p.stat()
            except OSError:  # a broken symlink is part of the identity too
                lines.append(f"{p.relative_to(root).as_posix()}\tbroken\n")
                continue
            lines.append(f"{p.relative_to(root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n")
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()
