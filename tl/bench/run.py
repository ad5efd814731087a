"""Driver: every measurement in its own child process (end-to-end wall time, its own peak
RSS), one table of ratios against the tutorial baseline and the compute ceiling, written as
markdown and JSON and logged to MLflow. Ratios compare runs of this one invocation only."""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tl.bench import report
from tl.runtime.paths import project_root

MARK = "BENCH-RESULT "
SHARED_DATA = project_root().parent / "shared" / "data" / "hymenoptera_data"


# ---------------------------------------------------------------- child side
def _child(spec: dict) -> dict:
    kind = spec["kind"]
    if kind == "tutorial":
        from tl.bench import tutorial

        return tutorial.run(spec["root"], spec["model"], spec["strategy"], spec["epochs"], spec["pretrained"])
    if kind == "ceiling":
        import torchvision
        from omegaconf import OmegaConf

        from tl.bench import ceiling
        from tl.runtime import machine

        rt = machine.resolve_runtime(OmegaConf.create({"device": "auto", "precision": "auto",
                                                       "channels_last": True, "num_workers": 0}))
        c = ceiling.measure(torchvision.models.resnet18(num_classes=2), rt, spec["n_train"], spec["n_val"],
                            spec["epochs"])
        c["precision"] = rt.precision
        return c
    if kind == "tl":
        import runpy

        sys.argv = ["tl.train", *spec["overrides"]]
        try:  # as `python -m tl.train` does, so Hydra finds conf/ the same way
            runpy.run_module("tl.train", run_name="__main__", alter_sys=True)
        except SystemExit as e:
            if e.code not in (0, None):
                raise
        return _tl_results(spec["uri"], spec["experiment"])
    if kind == "continue":
        from tl.runtime import allocator, wait_policy

        wait_policy.apply()  # as tl-train's entry does, before torch loads
        allocator.apply()
        from tl.bench import trials

        return trials.continued(spec["overrides"], spec["uri"], spec["stop_batch"])
    raise ValueError(kind)


def _tl_results(uri: str, experiment: str) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=100)
            if "tl.model" in r.data.tags]
    out = []
    for r in runs:
        ips = [m.value for m in client.get_metric_history(r.info.run_id, "images_per_second")]
        epochs = [m.value for m in client.get_metric_history(r.info.run_id, "epoch_seconds")]
        out.append({"epoch_seconds": epochs, "model": r.data.tags.get("tl.model"),
                    "head_grid_size": int(r.data.params.get("head_grid.size", 1)),
                    "parts": {k.removeprefix("setup_seconds."): v for k, v in r.data.metrics.items()
                              if k.startswith("setup_seconds.")},
                    "run_id": r.info.run_id, "status": r.info.status,
                    "best_val_acc": r.data.metrics.get("best_val_acc"),
                    "epoch_images_per_second": statistics.median(ips) if ips else None,
                    "setup_seconds": r.data.metrics.get("setup_seconds"),
                    "train_seconds": r.data.metrics.get("train_seconds"),
                    "feature_cache": r.data.params.get("runtime.feature_cache"),
                    "image_cache_mb": float(r.data.params.get("data.image_cache_mb", 0)),
                    "precision": r.data.params.get("runtime.precision"),
                    "channels_last": r.data.params.get("runtime.channels_last")})
    return {"runs": out}


def child_main(spec_json: str) -> None:
    result = _child(json.loads(spec_json))
    rss_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                 resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    result["peak_rss_mb"] = rss_kb / 1024  # the process and its largest loader worker
    print(MARK + json.dumps(result), flush=True)


# ---------------------------------------------------------------- parent side
def measure(spec: dict, env: dict | None = None, log_to: Path | None = None, beside: bool = False) -> dict:
    """One child process's result and wall time; `beside`: with a CPU-bound neighbour running."""
    from tl.bench import trials

    nb = trials.neighbour() if beside else None
    try:
        return _measure(spec, env, log_to)
    finally:
        if nb is not None:
            trials.stop(nb)


def _measure(spec: dict, env: dict | None, log_to: Path | None) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tl.bench.run", "--child", json.dumps(spec)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    if log_to is not None:
        log_to.write_text(proc.stdout + proc.stderr)
    lines = [l for l in proc.stdout.splitlines() if l.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child failed ({spec}):\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len(MARK):])
    result["wall_seconds"] = wall
    return result


def make_data(root: Path) -> Path:
    """A dataset of hymenoptera's shape: 2 classes, 124/121 train and 70/83 val 500x375 JPEGs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, counts in (("train", (124, 121)), ("val", (70, 83))):
        for cls, n, tint in (("ants", counts[0], (40, 0, 0)), ("bees", counts[1], (0, 0, 40))):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                small = rng.integers(0, 200, (12, 16, 3)).astype(np.uint8)
                img = Image.fromarray(small).resize((500, 375), Image.BICUBIC)
                arr = np.clip(np.asarray(img).astype(int) + tint, 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(folder / f"{i}.jpg", quality=90)
    return root


def tl_spec(name: str, overrides: list[str], uri: str) -> dict:
    return {"kind": "tl", "experiment": name, "uri": uri,
            "overrides": [*overrides, f"tracking.experiment={name}", f"tracking.uri={uri}"]}


def run_all(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else (SHARED_DATA if SHARED_DATA.is_dir() else make_data(out / "data"))
    uri = args.tracking_uri or f"sqlite:///{(out / 'mlflow.db').resolve()}"
    stamp = time.strftime("%H%M%S")
    ds = ["dataset=hymenoptera", f"dataset.root={data}", "hydra.run.dir=" + str(out / "hydra"),
          "hydra.sweep.dir=" + str(out / f"sweep-{stamp}")]
    n_train = sum(1 for _ in (data / "train").rglob("*.*"))
    n_val = sum(1 for _ in (data / "val").rglob("*.*"))
    E, F = args.epochs, args.freeze_epochs
    res: dict = {"data": str(data), "epochs": E, "freeze_epochs": F, "cpu": _cpu()}

    def cold(tag):  # a private, empty feature cache: every tl figure below pays for its features
        # (matplotlib's font list is the machine's, built once per user, not per data: shared)
        return {"XDG_CACHE_HOME": tempfile.mkdtemp(prefix=f"tl-bench-{tag}-", dir=out),
                "MPLCONFIGDIR": str(out / "matplotlib")}

    def step(key, spec, env=None, beside=False):
        print(f"[bench] {key} ...", flush=True)
        res[key] = measure(spec, env, out / f"{key}.log", beside)
        print(f"[bench] {key}: {res[key]['wall_seconds']:.1f}s", flush=True)

    def in_turns(specs, repeats):
        """Each measurement `repeats` times, taking turns; kept: the run of median wall time,
        with every run's (`walls`) and, pair by pair, each wall over the first's (`ratios`)."""
        got = {key: [] for key in specs}
        for i in range(repeats):
            for key, spec in specs.items():
                print(f"[bench] {key} ({i + 1} of {repeats}) ...", flush=True)
                got[key].append(measure(*spec(i), log_to=out / f"{key}.{i}.log"))
                print(f"[bench] {key}: {got[key][-1]['wall_seconds']:.1f}s", flush=True)
        first = next(iter(specs))
        for key, runs in got.items():
            walls = [r["wall_seconds"] for r in runs]
            res[key] = {**sorted(runs, key=lambda r: r["wall_seconds"])[(len(runs) - 1) // 2], "walls": walls,
                        "ratios": [w / r["wall_seconds"] for w, r in zip(walls, got[first])],
                        "rates": [report.epoch_rate(r) for r in runs]}

    r18 = ["model=resnet18", "model.pretrained=false", f"trainer.epochs={E}"]
    if "r18" in args.scenarios:
        # Throughput ratios between runs a minute apart move with the machine's drift: the
        # ceiling and tl's two strategies take turns, and each ratio is the median of its turns'.
        in_turns({"ceiling_r18": lambda i: ({"kind": "ceiling", "n_train": n_train, "n_val": n_val, "epochs": E},),
                  "tl_r18_finetune": lambda i: (tl_spec(f"bench-{stamp}-r18-ft{i}", [*ds, *r18, "strategy=finetune"],
                                                        uri),),
                  "tl_r18_partial": lambda i: (tl_spec(f"bench-{stamp}-r18-pf{i}", [
                      *ds, *r18, "strategy=partial_freeze", "strategy.frozen_stages=3"], uri),)}, args.repeats)
        step("baseline_r18_finetune", {"kind": "tutorial", "root": str(data), "model": "resnet18",
                                       "strategy": "finetune", "epochs": E, "pretrained": False})
        step("tl_r18_finetune_cap", tl_spec(f"bench-{stamp}-r18-cap", [*ds, *r18, "strategy=finetune",
                                                                        "trainer.image_cache_mb=20"], uri))
    lite = ["model=efficientnet_lite0", "strategy=freeze", f"trainer.epochs={F}"]
    if "freeze" in args.scenarios:
        step("baseline_lite0_freeze", {"kind": "tutorial", "root": str(data), "model": "efficientnet_lite0",
                                       "strategy": "freeze", "epochs": F, "pretrained": True})
        # tl's runs take seconds on a machine whose speed drifts by tens of percent within
        # minutes: each of these two is run `--repeats` times, in turns, and its median kept.
        lrs = "0.002,0.004,0.008,0.016,0.032"
        in_turns({"tl_lite0_freeze": lambda i: (tl_spec(f"bench-{stamp}-l0-fr{i}", [*ds, *lite], uri), cold(f"one{i}")),
                  "tl_lite0_freeze_lr_sweep": lambda i: (tl_spec(f"bench-{stamp}-l0-sweep{i}", [
                      "-m", *ds, *lite, f"optimizer.lr={lrs}"], uri), cold(f"sweep{i}"))}, args.repeats)
        # The same run in fp32: does the precision tl picked (bf16 where the CPU has it) keep
        # the accuracy, and is it faster end to end?
        step("tl_lite0_freeze_fp32", tl_spec(f"bench-{stamp}-l0-fp32", [*ds, *lite, "trainer.precision=fp32"], uri),
             cold("fp32"))
    if "screen" in args.scenarios:
        _screen(args, step, cold, ds, uri, stamp)
    if "continue" in args.scenarios:
        # Stopped at the first batch of epoch 4 of 6, as a race stops a trial at a rung.
        name, per_epoch = f"bench-{stamp}-continue", -(-n_train // 32)
        step("tl_continue_trial", {"kind": "continue", "uri": uri, "stop_batch": 3 * per_epoch + 1, "overrides": [
            *[o for o in ds if not o.startswith("hydra.")], "model=efficientnet_lite0", "strategy=freeze",
            "trainer.epochs=6", f"tracking.experiment={name}", f"tracking.uri={uri}"]}, cold("continue"))
    if "neighbour" in args.scenarios:
        _neighbour(step, ds, uri, stamp)
    if "answer" in args.scenarios:  # tl answer against its full grid, at answer_grid's defaults
        from tl.bench import answer_grid

        print("[bench] answer_grid ...", flush=True)
        res["answer_grid"] = answer_grid.run(answer_grid.parse(["--out", str(out / "answer_grid"),
                                                                *(["--data", args.data] if args.data else [])]))
    if "views" in args.scenarios:
        for k in args.views:
            step(f"tl_lite0_freeze_views{k}", tl_spec(f"bench-{stamp}-l0-v{k}", [*ds, *lite,
                 f"strategy.feature_cache.views={k}"], uri), cold(f"v{k}"))
        step("tl_lite0_freeze_nocache", tl_spec(f"bench-{stamp}-l0-nc", [*ds, *lite,
             "strategy.feature_cache.enabled=false"], uri), cold("nc"))
    return res


BACKBONES = "efficientnet_lite0,efficientnet_lite1,efficientnet_lite2"
GRID = ["+head_grid.lrs=[0.002,0.008,0.032,0.128]", "+head_grid.wds=[0.0,0.0001,0.001,0.01]"]


def _screen(args, step, cold, ds, uri, stamp) -> None:
    """The race's screen: 3 backbones x 16 head settings, against one freeze run of each."""
    base = ["-m", *ds, f"model={BACKBONES}", "strategy=freeze", f"trainer.epochs={args.freeze_epochs}"]
    step("tl_screen_one_head", tl_spec(f"bench-{stamp}-screen1", base, uri), cold("screen1"))
    step("tl_screen_grid16", tl_spec(f"bench-{stamp}-screen16", [*base, *GRID], uri), cold("screen16"))


def _neighbour(step, ds, uri, stamp) -> None:
    """One tl epoch (resnet18 partial_freeze) alone and beside a CPU-bound neighbour, at tl's
    default threads; then beside it with every core's thread (`trainer.threads`), with passive
    and with spinning OpenMP waits: the wait policy matters where threads outnumber free cores."""
    r18 = [*ds, "model=resnet18", "model.pretrained=false", "strategy=partial_freeze",
           "strategy.frozen_stages=3", "trainer.epochs=1"]
    every = f"trainer.threads={_usable_cpus()}"
    step("tl_epoch_alone", tl_spec(f"bench-{stamp}-alone", r18, uri))
    step("tl_epoch_beside_neighbour", tl_spec(f"bench-{stamp}-beside", r18, uri), beside=True)
    step("tl_epoch_beside_neighbour_every_core", tl_spec(f"bench-{stamp}-every", [*r18, every], uri), beside=True)
    step("tl_epoch_beside_neighbour_spinning", tl_spec(f"bench-{stamp}-spin", [*r18, every], uri),
         {"OMP_WAIT_POLICY": "ACTIVE"}, beside=True)


def _usable_cpus() -> int:
    from tl.runtime.machine import usable_cpus

    return usable_cpus()


def _cpu() -> str:
    from tl.runtime.machine import cpu_name

    return cpu_name()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m tl.bench", description=__doc__)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--data", help="a train/val class-folder dataset (default: the tutorial's, "
                                  "else one of its shape generated here)")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the throughput scenarios")
    p.add_argument("--freeze-epochs", type=int, default=25, help="epochs of the freeze scenarios")
    p.add_argument("--scenarios", nargs="+", default=["r18", "freeze", "screen", "continue", "neighbour"],
                   choices=["r18", "freeze", "screen", "continue", "neighbour", "views", "answer"])
    p.add_argument("--repeats", type=int, default=3, help="runs of the compute ceiling, resnet18 finetune and "
                   "partial_freeze, lite0 freeze and lr sweep rows, taken in turns; each row is their median")
    p.add_argument("--views", nargs="+", type=int, default=[1, 2, 4])
    p.add_argument("--out", default=str(project_root() / "bench" / time.strftime("%Y-%m-%d_%H-%M-%S")))
    p.add_argument("--tracking-uri", help="where the bench's own runs go (default: a store in --out)")
    args = p.parse_args(argv)
    if args.child:
        return child_main(args.child)
    results = run_all(args)
    report.write(results, Path(args.out))


if __name__ == "__main__":
    main()
