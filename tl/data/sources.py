"""Where each dataset's files come from: an existing folder, a verified download, or a
bundled dataset written out once.

A first use writes into a temp folder beside the target and renames it once, holding an
exclusive lock on a file beside the target: the jobs of a parallel sweep that all start on a
missing dataset wait for the first, then use its folder; none removes a folder another reads.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from contextlib import contextmanager
from pathlib import Path

from tl.data import imagefiles
from tl.errors import DataError

log = logging.getLogger(__name__)


def _tree_digest(root: Path, walk, describe) -> str:
    """sha256 over the sorted `relative path<TAB>describe(file)` lines of the files `walk` finds."""
    lines = [f"{(Path(d) / n).relative_to(root).as_posix()}\t{describe(Path(d) / n)}\n"
             for d, _, names in walk for n in names]
    # surrogateescape: file names need not be valid UTF-8
    return hashlib.sha256("".join(sorted(lines)).encode("utf-8", "surrogateescape")).hexdigest()


def tree_sha256(root: Path) -> str:
    """One digest for a folder tree's content: every file's sha256."""
    return _tree_digest(root, os.walk(root), lambda p: hashlib.sha256(p.read_bytes()).hexdigest())


def _stat_identity(p: Path) -> str:
    """Size, mtime, ctime and inode: any write changes ctime, and no tool can set it back
    (an edit that restores size and mtime still shows)."""
    try:
        st = p.stat()
    except OSError:  # a broken symlink is part of the identity too
        return "broken"
    return f"{st.st_size}\t{st.st_mtime_ns}\t{st.st_ctime_ns}\t{st.st_ino}"


@contextmanager
def first_use_lock(target: Path):
    """Hold an exclusive lock on `.<target name>.lock` beside `target` (other processes wait)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _publish(tmp: Path, dest: Path) -> None:
    """Rename the finished `tmp` folder to `dest`: one atomic step, so a half-written tree is
    never mistaken for data. A `dest` that appeared meanwhile (a process that took no lock)
    is used as it is."""
    try:
        os.replace(tmp, dest)
    except OSError as e:
        if not dest.is_dir():
            raise DataError(f"could not move the new dataset into place at {str(dest)!r} "
                            f"({type(e).__name__}: {e}): check that its folder is writable") from None
        log.info("%s appeared while this process wrote it: using that copy", dest)


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
        _publish(extracted, dest)
    return dest


def ensure_hymenoptera(cfg, root: Path) -> Path:
    if root.exists():
        return root
    if not cfg.get("download", True):
        raise DataError(f"dataset.root={str(root)!r} does not exist and dataset.download=false: "
                        "put hymenoptera_data there or set dataset.root")
    with first_use_lock(root):
        if root.exists():  # another process downloaded it while this one waited
            return root
        return download_zip_tree(cfg.url, root, "hymenoptera_data", cfg.get("content_sha256"))


def ensure_digits(root: Path, image_size: int) -> Path:
    """scikit-learn's 8x8 digits as PNG class folders, written once (atomically)."""
    marker = root / f".tl-digits-{image_size}px"
    if marker.exists():
        return root
    with first_use_lock(root):
        if not marker.exists():  # else another process wrote it while this one waited
            _write_digits(root, marker, image_size)
    return root


def _write_digits(root: Path, marker: Path, image_size: int) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=".digits-"))
    try:
        for i, (img, label) in enumerate(zip(digits.images, digits.target)):
            folder = tmp / str(label)
            folder.mkdir(exist_ok=True)
            pixels = (img * (255.0 / 16.0)).round().astype("uint8")
            Image.fromarray(pixels, mode="L").resize((image_size, image_size), Image.BICUBIC).save(
                folder / f"{i:04d}.png"
            )
        (tmp / marker.name).touch()
        if root.exists():  # written at another image size
            shutil.rmtree(root)
        _publish(tmp, root)
    finally:  # gone once published; a failed write leaves nothing behind
        shutil.rmtree(tmp, ignore_errors=True)


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
    """A cheap identity for a folder's content: (path, size, mtime, ctime, inode) of every
    file, symlinked folders followed once. Any added, removed, replaced, touched or edited
    file changes it (a copy of the folder too: it is not the content's digest)."""
    return _tree_digest(root, imagefiles.walk_once(root), _stat_identity)


def _file_sha256(p: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:  # a broken symlink is part of the identity too
        return "broken"
    return h.hexdigest()


def tree_content_sha256(root: Path) -> str:
    """The identity of a folder's data: every non-hidden file's bytes under its relative path,
    symlinked folders followed once. No mtimes: a copy of the folder has the same digest."""
    def walk():
        for d, dirs, names in imagefiles.walk_once(root):
            dirs[:] = [x for x in dirs if not imagefiles.is_hidden(x)]
            yield d, dirs, [n for n in names if not imagefiles.is_hidden(n)]

    return _tree_digest(root, walk(), _file_sha256)
