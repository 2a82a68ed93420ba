"""A miniature of the CBAM paper's ablations, trained with npcbam on its synthetic tasks.

Usage::

    python benchmarks/ablation.py                        # full run: 12 rows x 3 seeds x 2 tasks
    python benchmarks/ablation.py --jobs 1               # the same, one run after the other
    python benchmarks/ablation.py --json ablation.json --markdown ablation-table.md \\
        --figure ablation.png                            # ... and write the results
    python benchmarks/ablation.py --quick                # tiny data, 1 epoch: checks it runs
    python benchmarks/ablation.py --seeds 5 --tasks where --rows none cbam-k7
    python benchmarks/ablation.py --merge old.json new.json --json all.json  # no training

Each row of ``ROWS`` is one attention design from the paper's design space (Woo et al., ECCV
2018, Tables 1-3), placed in every residual block of the small ``AttentionClassifier`` and
trained with ``npcbam.train.train_classifier``. Every (task, row) is trained once per seed;
the seed changes the data (train and test sets), the initialisation and the batch order, and
rows with the same seed see the same data. Reported per row: test accuracy (mean and sample
std over the seeds; no std for a single seed), the accuracy of every seed, the parameter count
and the mean training time (wall-clock seconds of ``train_classifier``'s loop, its evaluation
after each epoch included, data generation excluded).

The data are harder than ``npcbam train``'s defaults (on which every model reaches about 100 %):
fewer training images, more clutter and noise; see ``TASK_SETUPS``. BLAS runs on one thread
(``NPCBAM_ABLATION_THREADS`` changes it): on the shared 2-core machine this was written on,
two OpenBLAS threads made a training run about 5x slower whenever the other core was busy.

The runs are independent, so ``--jobs N`` trains N of them at a time, each in its own worker
process (default: one per CPU core this process may use; ``--jobs 1`` trains them one after the
other in this process). Every run is seeded and pinned to its BLAS threads, so its accuracies
are bit-identical whatever ``--jobs`` is; only the times change. Progress lines come in the
order the runs finish; the tables and the JSON list them in the grid's order, and record the
number of jobs and the total wall time. A run that fails, or Ctrl-C, stops every worker and
writes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import platform
import signal
import statistics
import sys
import time
import traceback
from pathlib import Path

# before NumPy starts its BLAS thread pool; the worker processes of --jobs inherit these
# variables and, started with "spawn", import this file before anything imports NumPy
THREADS = os.environ.get("NPCBAM_ABLATION_THREADS", "1")
os.environ["OPENBLAS_NUM_THREADS"] = THREADS
os.environ["OMP_NUM_THREADS"] = THREADS
os.environ["MKL_NUM_THREADS"] = THREADS

import numpy as np  # noqa: E402 (after the thread settings)
from model_cost import multiply_adds  # noqa: E402 (this folder: the script's own)

from npcbam.data import TASKS, load_task  # noqa: E402
from npcbam.train import TrainConfig, build_model, train_classifier  # noqa: E402

# the paper's CBAM, every option spelled out: channel attention from avg- and max-pooled
# features, then spatial attention from the channel max and mean (the "pool" descriptor)
CBAM = {
    "pool_types": ("avg", "max"),
    "spatial_descriptor": "pool",
    "arrangement": "channel-spatial",
}


@dataclasses.dataclass(frozen=True)
class Row:
    """One design of the ablation, and the paper's figure for it when the issue quotes one."""

    key: str  # its name, on the command line, in tables and in the JSON
    attention: str  # TrainConfig.attention: "none", "channel", "spatial" or "cbam"
    kernel_size: int  # TrainConfig.kernel_size, the spatial convolution's k (unused without it)
    paper_error: float | None  # ResNet-50, ImageNet-1K top-1 error (%), see PAPER
    options: dict  # TrainConfig.attention_options


# fmt: off
ROWS = [
    #   key                attention  k  paper  attention_options
    Row("none",            "none",    7, 24.56, {}),
    Row("channel-avg",     "channel", 7, 23.14, {"pool_types": ("avg",)}),
    Row("channel-max",     "channel", 7, 23.20, {"pool_types": ("max",)}),
    Row("channel-avgmax",  "channel", 7, 22.80, {"pool_types": ("avg", "max")}),
    Row("cbam-k3",         "cbam",    3, None,  CBAM),
    Row("cbam-k7",         "cbam",    7, 22.66, CBAM),
    Row("cbam-conv-k7",    "cbam",    7, None,  {**CBAM, "spatial_descriptor": "conv"}),
    Row("spatial-channel", "cbam",    7, 22.78, {**CBAM, "arrangement": "spatial-channel"}),
    Row("parallel",        "cbam",    7, 22.95, {**CBAM, "arrangement": "parallel"}),
    Row("se",              "se",      7, 23.14, {}),
    Row("eca",             "eca",     7, None,  {}),
    Row("bam",             "bam",     7, None,  {}),
]
# fmt: on
ROW_KEYS = [row.key for row in ROWS]
PAPER = (
    "ResNet-50 on ImageNet-1K, top-1 error (%), from the CBAM paper (Woo et al., ECCV 2018, "
    "Tables 1, 3 and 4; SE's row is SE-ResNet-50 as trained there) as quoted in the project's "
    "issue; no figure for the k = 3 and 1x1-conv rows, nor for ECA and BAM, whose papers "
    "trained their ResNet-50s differently (see docs/ablation.md)"
)

# Per task: the TrainConfig fields (besides task, attention, options, kernel and seed) and the
# options of npcbam.data.load_task. Chosen so that the baseline stays well below 100 % and a
# full run fits in half an hour on two cores (17 minutes measured, shared with other jobs; see
# docs/ablation.md).
TASK_SETUPS = {
    "where": {
        "train": {"n_train": 1000, "n_test": 1000, "epochs": 6, "batch_size": 64, "lr": 1e-3},
        "data": {"clutter": 32, "noise": 0.2},
    },
    "what": {
        "train": {"n_train": 2000, "n_test": 1000, "epochs": 4, "batch_size": 64, "lr": 3e-3},
        "data": {"noise": 2.5},
    },
}
QUICK_SETUP = {
    "train": {"n_train": 64, "n_test": 64, "epochs": 1, "batch_size": 32, "lr": 3e-3},
    "data": {},
}
QUICK_ROWS = ["none", "channel-avgmax", "cbam-k7"]


# CBAM's family, each with its defaults in AttentionClassifier (r = 4, see make_attention)
FAMILY = {
    "se": "SE: avg pool → FC → ReLU → FC (biases) → sigmoid",
    "eca": "ECA: avg pool → 1-D conv across C (k=3) → sigmoid",
    "bam": "BAM (paper gate): F + F ⊙ σ(M_c + M_s), dilated M_s",
}


def describe(row: Row) -> str:
    """The design in words, from the row's settings."""
    if row.attention == "none":
        return "no attention"
    if row.attention in FAMILY:
        return FAMILY[row.attention]
    options = row.options
    pools = " & ".join(options.get("pool_types", ("avg", "max")))
    if row.attention == "channel":
        return f"channel only, {pools} pool"
    descriptor = {"pool": "max & mean over C", "conv": "1×1 conv"}[
        options.get("spatial_descriptor", "pool")
    ]
    spatial = f"spatial ({descriptor}, k={row.kernel_size})"
    if row.attention == "spatial":
        return f"{spatial} only"
    channel = f"channel ({pools})"
    arrangement = options.get("arrangement", "channel-spatial")
    if arrangement == "parallel":
        return f"{channel} ∥ {spatial}"
    first, second = (channel, spatial) if arrangement == "channel-spatial" else (spatial, channel)
    return f"{first} → {second}"


def config_of(task: str, row: Row, seed: int, setup: dict) -> TrainConfig:
    return TrainConfig(
        task=task,
        attention=row.attention,
        attention_options=dict(row.options),
        kernel_size=row.kernel_size,
        seed=seed,
        task_options=dict(setup["data"]),
        attention_stats=False,  # Grad-CAM statistics are not scored here, and cost more
        **setup["train"],
    )


def model_cost(task: str, row: Row, setup: dict) -> dict:
    """The row's model on the task: parameters and multiply-adds per image (model_cost.py);
    the same for every seed."""
    one_image = load_task(task, 1, 1, seed=0, **setup["data"])[0]  # images (1, C, H, W)
    model = build_model(config_of(task, row, 0, setup), one_image)
    return {
        "parameters": int(sum(p.size for p in model.parameters().values())),
        "multiply_adds": multiply_adds(model, one_image.images.shape[1:]),
    }


def merge(paths: list[Path]) -> dict:
    """Several results files as one: every (task, row) of every file, in ROWS order, a later
    file's row replacing an earlier one's. The files must agree on seeds, --quick and each
    task's settings. A row without multiply-adds (a file from before they were counted) gets
    them from its model."""
    files = [json.loads(path.read_text()) for path in paths]
    first = files[0]
    merged = {**{k: v for k, v in first.items() if k != "tasks"}, "tasks": {}, "merged": []}
    rows: dict[str, dict[str, dict]] = {}
    for path, results in zip(paths, files):
        for key in ("seeds", "quick"):
            if results[key] != first[key]:
                raise ValueError(f"{path}: {key}={results[key]!r}, {paths[0]}: {first[key]!r}")
        for task, block in results["tasks"].items():
            settings = {k: v for k, v in block.items() if k != "rows"}
            known = merged["tasks"].setdefault(task, settings)
            if known != settings:
                raise ValueError(f"{path}: task {task!r} has settings {settings}, not {known}")
            rows.setdefault(task, {}).update((row["row"], row) for row in block["rows"])
        merged["merged"].append(
            {k: results.get(k) for k in ("command", "machine", "wall_seconds", "jobs", "merged")}
        )
    merged["command"] = [entry["command"] for entry in merged["merged"]]
    merged["jobs"] = []  # per merged file; a file from before --jobs ran one run at a time
    for entry in merged["merged"]:
        jobs = entry["jobs"] or 1
        merged["jobs"] += jobs if isinstance(jobs, list) else [jobs]  # a merged file: a list
    merged["wall_seconds"] = sum(entry["wall_seconds"] for entry in merged["merged"])
    merged["paper"] = PAPER
    for task, by_key in rows.items():
        setup = {"train": merged["tasks"][task]["train_config"]}
        setup["data"] = merged["tasks"][task]["data_options"]
        ordered = [by_key[row.key] for row in ROWS if row.key in by_key]
        for summary, row in zip(ordered, [row for row in ROWS if row.key in by_key]):
            if "multiply_adds" not in summary:
                cost = model_cost(task, row, setup)
                assert cost["parameters"] == summary["parameters"], (row.key, cost)
                summary["multiply_adds"] = cost["multiply_adds"]
        merged["tasks"][task]["rows"] = ordered
    return merged


def run_one(task: str, row: Row, seed: int, setup: dict) -> dict:
    config = config_of(task, row, seed, setup)
    result = train_classifier(config, log=None)
    return {
        "seed": seed,
        "test_accuracy": result.test_accuracy,
        "train_accuracy": result.history[-1]["train_accuracy"],
        "train_loss": result.history[-1]["loss"],  # last epoch's mean: shows any change of bits
        "train_seconds": result.train_seconds,
        "parameters": int(sum(p.size for p in result.model.parameters().values())),
    }


@dataclasses.dataclass(frozen=True)
class Job:
    """One training run of the grid; ``index`` is its place in the grid's order."""

    index: int
    task: str
    row_key: str
    seed: int
    setup: dict

    def __str__(self) -> str:
        return f"{self.task} {self.row_key} seed {self.seed}"


class RunFailed(RuntimeError):
    """A training run raised; the message names the run and holds its traceback."""


def run_job(job: Job) -> tuple[Job, dict | None, float, str | None]:
    """Train one run: ``(job, run, wall seconds, None)``, or ``(job, None, seconds, traceback)``
    when it raised (an exception's traceback does not survive the way back from a worker
    process, so it travels as text)."""
    start = time.perf_counter()
    row = ROWS[ROW_KEYS.index(job.row_key)]
    try:
        run = run_one(job.task, row, job.seed, job.setup)
    except Exception:
        return job, None, time.perf_counter() - start, traceback.format_exc()
    return job, run, time.perf_counter() - start, None


def ignore_ctrl_c() -> None:
    """In a worker process: leave Ctrl-C (SIGINT, sent to the whole process group) to the
    main process, which then stops the workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_jobs(jobs: list[Job], n_workers: int):
    """Yield ``(job, run, seconds)`` for every job, in the order they finish; raise
    :class:`RunFailed` at the first that fails. ``n_workers`` 1: one after the other in this
    process; more: that many worker processes, stopped on failure or Ctrl-C (leaving the
    ``with`` block terminates them)."""
    if n_workers == 1:
        outcomes = map(run_job, jobs)
    else:
        # "spawn": a fresh interpreter per worker, whatever the platform's default (a forked
        # child would inherit this process's BLAS thread pool and state)
        context = multiprocessing.get_context("spawn")
        pool = context.Pool(min(n_workers, len(jobs)), initializer=ignore_ctrl_c)
        outcomes = pool.imap_unordered(run_job, jobs)
    try:
        for job, run, seconds, failure in outcomes:
            if failure is not None:
                raise RunFailed(f"run {job} failed:\n{failure.rstrip()}")
            yield job, run, seconds
    finally:
        if n_workers > 1:
            pool.terminate()  # at once: on success the workers are idle, else stop them
            pool.join()


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1); no std (None) for a single value."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def summarise(row: Row, runs: list[dict], cost: dict) -> dict:
    accuracy_mean, accuracy_std = mean_std([r["test_accuracy"] for r in runs])
    train_mean, train_std = mean_std([r["train_accuracy"] for r in runs])
    (parameters,) = {r["parameters"] for r in runs}  # the same model for every seed
    assert parameters == cost["parameters"], (parameters, cost)
    return {
        "row": row.key,
        "design": describe(row),
        "attention": row.attention,
        "attention_options": {
            k: list(v) if isinstance(v, tuple) else v for k, v in row.options.items()
        },
        "kernel_size": row.kernel_size,
        "paper_top1_error": row.paper_error,
        "test_accuracy_mean": accuracy_mean,
        "test_accuracy_std": accuracy_std,
        "train_accuracy_mean": train_mean,
        "train_accuracy_std": train_std,
        "parameters": parameters,
        "multiply_adds": cost["multiply_adds"],
        "train_seconds_mean": statistics.fmean(r["train_seconds"] for r in runs),
        "runs": runs,
    }


def pct(value: float | None, spec: str = ".1f") -> str:
    """A fraction as a percentage, or "n/a" (the std of a single seed)."""
    return "n/a" if value is None else format(100 * value, spec)


def versus(row: dict, baseline: dict | None, key: str) -> str:
    """What ``row`` adds to the baseline's ``key`` (parameters, multiply-adds), signed."""
    return "–" if baseline is None else f"{row[key] - baseline[key]:+,d}"


def markdown(results: dict) -> str:
    """One table per task: the rows in order, accuracies in percent."""
    lines = []
    for task, block in results["tasks"].items():
        baseline = next((r for r in block["rows"] if r["row"] == "none"), None)
        data = ", ".join(f"{k}={v}" for k, v in block["data_options"].items()) or "defaults"
        train = ", ".join(f"{k}={v}" for k, v in block["train_config"].items())
        lines += [
            f"### Task {task!r}",
            "",
            f"Data: {data}. Training: {train}. Seeds: {results['seeds']}.",
            "",
            "| # | row | design | test acc. % mean | std | per seed | train acc. % | parameters | "
            "vs baseline | mult-adds | vs baseline | train s | paper: top-1 err. % |",
            "|---:|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for index, row in enumerate(block["rows"], 1):
            paper = "–" if row["paper_top1_error"] is None else f"{row['paper_top1_error']:.2f}"
            seeds = " / ".join(pct(r["test_accuracy"]) for r in row["runs"])
            extra, macs = (versus(row, baseline, key) for key in ("parameters", "multiply_adds"))
            lines.append(
                f"| {index} | {row['row']} | {row['design']} | {pct(row['test_accuracy_mean'])} | "
                f"{pct(row['test_accuracy_std'])} | {seeds} | {pct(row['train_accuracy_mean'])} | "
                f"{row['parameters']} | {extra} | {row['multiply_adds']:,d} | {macs} | "
                f"{row['train_seconds_mean']:.1f} | {paper} |"
            )
        lines.append("")
    jobs = results.get("jobs", 1)  # files from before --jobs ran one run at a time
    jobs = " + ".join(map(str, jobs)) if isinstance(jobs, list) else jobs
    lines += [f"Wall time {results['wall_seconds']:.0f} s; training runs at a time: {jobs}.", ""]
    return "\n".join(lines)


def figure(results: dict, path: Path) -> bool:
    """Mean ± std test accuracy per row (dots: the seeds), one panel per task. matplotlib is
    not a dependency of npcbam: without it, say so and return False."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no figure written to {path}")
        return False
    tasks = list(results["tasks"].items())
    n_rows = max(len(block["rows"]) for _, block in tasks)
    fig, axes = plt.subplots(
        1, len(tasks), figsize=(4.2 * len(tasks) + 2.4, 0.38 * n_rows + 1.4), sharey=True
    )
    axes = np.atleast_1d(axes)
    for ax, (task, block) in zip(axes, tasks):
        rows = block["rows"]
        y = np.arange(len(rows))[::-1]
        means = np.array([100 * r["test_accuracy_mean"] for r in rows])
        stds = np.array([100 * (r["test_accuracy_std"] or 0.0) for r in rows])
        ax.errorbar(means, y, xerr=stds, fmt="o", color="C0", capsize=3, label="mean ± std")
        for yi, r in zip(y, rows):
            seeds = [100 * run["test_accuracy"] for run in r["runs"]]
            ax.plot(seeds, [yi] * len(seeds), "x", color="C1", alpha=0.7, ms=4)
        baseline = next((r for r in rows if r["row"] == "none"), None)
        if baseline is not None:
            ax.axvline(100 * baseline["test_accuracy_mean"], color="grey", ls="--", lw=0.8)
        ax.set_yticks(y, [r["row"] for r in rows], fontsize=8)
        ax.set_xlabel("test accuracy (%)")
        ax.set_title(f"task {task!r}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].plot([], [], "x", color="C1", label="one seed")
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"npcbam ablation, {len(results['seeds'])} seed(s) per row", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"wrote {path}")
    return True


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "blas_threads": int(THREADS),
    }


def cpu_cores() -> int:
    """The CPU cores this process may run on (all of the machine's where that is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, 1 epoch, 1 seed, 3 rows")
    parser.add_argument("--seeds", type=int, help="seeds 0 .. N-1 (default 3; --quick: 1)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--rows", nargs="+", choices=ROW_KEYS, help="default: all (--quick: 3)")
    parser.add_argument("--json", type=Path, help="write every number to this file")
    parser.add_argument("--markdown", type=Path, help="write the tables to this file")
    parser.add_argument("--figure", type=Path, help="write the figure (PNG) here (matplotlib)")
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=cpu_cores(),
        metavar="N",
        help="training runs at a time, each in its own worker process; 1: one after the other "
        f"in this process (default: the number of CPU cores, {cpu_cores()} here)",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="train nothing: combine these results files (a later file's rows replace an "
        "earlier one's), then write the tables, JSON and figure as asked",
    )
    args = parser.parse_args(argv)
    try:
        results = merge(args.merge) if args.merge else run_grid(args, argv, parser)
    except ValueError as error:  # files that cannot be merged: say why, no traceback
        parser.error(str(error))
    except RunFailed as error:
        print(f"ablation.py: {error}\nstopped: no results written", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nablation.py: interrupted: no results written", file=sys.stderr)
        return 130
    table = markdown(results)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.markdown:
        args.markdown.write_text(table)
        print(f"wrote {args.markdown}")
    if args.figure:
        figure(results, args.figure)
    return 0


def run_grid(args, argv, parser) -> dict:
    """Train every selected (task, row, seed), ``args.jobs`` at a time; the results as written
    to the JSON, in the grid's order whatever order the runs finished in."""
    n_seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    if n_seeds < 1:
        parser.error(f"--seeds must be >= 1, got {n_seeds}")
    seeds = list(range(n_seeds))
    keys = args.rows or (QUICK_ROWS if args.quick else ROW_KEYS)
    rows = [row for row in ROWS if row.key in keys]
    tasks = list(dict.fromkeys(args.tasks))
    setups = {task: QUICK_SETUP if args.quick else TASK_SETUPS[task] for task in tasks}
    grid = [(task, row.key, seed) for task in tasks for row in rows for seed in seeds]
    jobs = [Job(i, task, key, seed, setups[task]) for i, (task, key, seed) in enumerate(grid)]
    n_workers = min(args.jobs, len(jobs))

    results = {
        "command": " ".join(["python", "benchmarks/ablation.py", *(argv or sys.argv[1:])]),
        "quick": args.quick,
        "seeds": seeds,
        "jobs": n_workers,
        "machine": machine(),
        "paper": PAPER,
        "tasks": {},
    }
    total = len(jobs)
    print(
        f"{total} runs: tasks {tasks}, {len(rows)} rows, seeds {seeds}; {n_workers} at a time",
        flush=True,
    )
    start, runs = time.perf_counter(), [None] * total
    for done, (job, run, seconds) in enumerate(run_jobs(jobs, n_workers), 1):
        runs[job.index] = run
        print(
            f"[{done:>2}/{total}] {job.task:<5} {job.row_key:<15} seed {job.seed}: test accuracy "
            f"{run['test_accuracy']:.3f} (train {run['train_accuracy']:.3f}), {seconds:.1f} s",
            flush=True,
        )
    results["wall_seconds"] = time.perf_counter() - start
    in_grid_order = iter(runs)  # task, then row, then seed, as the grid was built
    for task in tasks:
        setup = setups[task]
        block = {"train_config": setup["train"], "data_options": setup["data"], "rows": []}
        for row in rows:
            row_runs = [next(in_grid_order) for _ in seeds]
            block["rows"].append(summarise(row, row_runs, model_cost(task, row, setup)))
        results["tasks"][task] = block
    print(
        f"total: {total} runs in {results['wall_seconds']:.0f} s, {n_workers} at a time\n",
        flush=True,
    )
    return results


if __name__ == "__main__":
    sys.exit(main())
