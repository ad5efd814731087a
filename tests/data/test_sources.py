"""First use of a bundled or downloaded dataset is safe when a parallel sweep's jobs all start
on it at once: each waits for the first to publish the folder, then reads that folder whole."""

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from tests.conftest import make_image_folder

REPO = Path(__file__).resolve().parents[2]

# Each process waits for a common start time, makes the dataset, then lists its files again
# and again for a while: a folder removed or replaced under it shows as a short listing.
WORKER = """
import os, sys, time
from pathlib import Path
from omegaconf import OmegaConf
from tl.data import sources
kind, root, start, extra = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
while time.time() < start:
    time.sleep(0.001)
if kind == "digits":
    sources.ensure_digits(root, 8)
else:
    sources.ensure_hymenoptera(OmegaConf.create({"url": extra, "content_sha256": None}), root)
counts = set()
end = time.time() + 1.5
while time.time() < end:
    counts.add(sum(len(files) for _, _, files in os.walk(root)))
print(sorted(counts))
"""


def run_at_once(kind: str, root: Path, extra: str = "", n: int = 3) -> list[subprocess.CompletedProcess]:
    start = time.time() + 4  # after every interpreter has started
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, kind, str(root), str(start), extra], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def test_digits_written_by_jobs_starting_together_are_whole_for_each_of_them(tmp_path):
    root = tmp_path / "data" / "digits"
    for done in run_at_once("digits", root):
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == "[1798]"  # 1797 images and the marker, every time it looked
    assert [p.name for p in root.parent.iterdir() if p.name.startswith(".digits-")] == []


def test_a_download_raced_by_jobs_starting_together_is_published_once_and_used_by_all(tmp_path):
    tree = make_image_folder(tmp_path / "src" / "hymenoptera_data", n_train=20, n_val=10)
    archive = tmp_path / "hymenoptera_data.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(tree.rglob("*")):
            z.write(path, path.relative_to(tmp_path / "src"))
    n_files = sum(1 for p in tree.rglob("*") if p.is_file())
    root = tmp_path / "data" / "hymenoptera_data"
    for done in run_at_once("hymenoptera", root, archive.as_uri(), n=4):
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == f"[{n_files}]"
