"""Command line: ``npcbam gradcheck``, ``npcbam trace`` and ``npcbam train`` (also
``python -m npcbam``).

Bad input never ends in a traceback: argument values are checked before any work starts and
refused with one line naming the flag (exit status 2); the errors the library raises for bad
values, running out of memory, a file that cannot be written and Ctrl-C are reported the same
way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

GRADCHECK_DESCRIPTION = """\
Check the manual backward pass of every op and module of npcbam against finite differences
(float64, fourth-order central differences) and print one table per check, then a summary.
The first line names the npcbam installation being tested, its path and version: after a
plain `pip install .` that is the installed copy, and edits to a clone are NOT tested; run
`pip install -e .` in the clone to test your edits.

Columns of each table:
  tensor       the input or parameter whose gradient is checked
  shape        its shape
  mode         full: every element; sample: randomly chosen elements; dirs: random
               directions (compares <J u, v> with <u, J^T v>)
  checked      how many elements (or directions) were compared
  kinks        how many were not compared because a max or a ReLU changes its winner
               inside the finite-difference stencil (not differentiable there)
  max abs err  the largest |a - n|, a the analytic gradient, n the numerical one
  max rel err  the largest |a - n| / max(|a|, |n|, atol/rtol)
  where        the index of the largest relative error (a direction's number in dirs mode)
  result       pass when every compared entry has |a - n| <= atol + rtol |n|; the line
               above the columns gives atol, rtol, h and the order of the stencil

Exit status: 0 when every check passes, 1 when one fails, 2 for bad arguments."""


# -- argument types: each refuses a bad value with a message argparse puts after the flag ----


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse type)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (argparse type): seeds."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def odd_positive_int(text: str) -> int:
    """An odd integer >= 1 (argparse type): kernel sizes with 'same' padding."""
    value = positive_int(text)
    if value % 2 == 0:
        raise argparse.ArgumentTypeError(
            f"must be odd ('same' padding puts k // 2 on each side), got {value}"
        )
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


class UsageError(Exception):
    """A bad combination of arguments found before any work starts: one line, exit status 2."""


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable), else the machine's
    physical memory, else None."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


# -- npcbam gradcheck ---------------------------------------------------------------------------


def installation() -> str:
    """One line: which npcbam this process imported (version and path) and what kind of copy it
    is, so that a check of an installed copy is never mistaken for a check of a clone."""
    import npcbam

    package = Path(npcbam.__file__).resolve().parent
    if "site-packages" in package.parts or "dist-packages" in package.parts:
        kind = (
            "an installed copy: edits to a clone are not tested here; to test them, run "
            "`pip install -e .` in the clone"
        )
    else:
        kind = "a source tree (an editable install, or on the path): its edits are tested"
    return f"npcbam {npcbam.__version__} from {package} ({kind})"


def _gradcheck(args: argparse.Namespace) -> int:
    from npcbam.selfcheck import check_names, run_checks

    valid = check_names()
    unknown = [name for name in args.only or () if name not in valid]
    if unknown:
        raise UsageError(
            f"--only: unknown check name{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; valid names: {', '.join(valid)}"
        )
    print(f"Testing {installation()}", flush=True)
    which = "every npcbam op and module" if args.only is None else ", ".join(args.only)
    print(f"Gradient check of {which} (seed {args.seed}):\n", flush=True)
    results = run_checks(seed=args.seed, only=args.only)
    for name, report in results:
        print(f"[{name}] {report}", end="\n\n", flush=True)
    reports = [report for _, report in results]
    failed = [name for name, report in results if not report.passed]
    worst = max(r.max_rel_err for r in reports)
    kinks = sum(r.kinks for r in reports)
    print(
        f"{len(reports) - len(failed)} of {len(reports)} checks passed; worst relative error "
        f"{worst:.2e}; {kinks} kink coordinates skipped"
    )
    for name, report in results:
        if not report.passed:
            print(f"FAILED: {report.title.splitlines()[0]} (--only {name})")
    return 1 if failed else 0


# -- npcbam trace ---------------------------------------------------------------------------------


def _trace(args: argparse.Namespace) -> int:
    from npcbam.nn import CBAM
    from npcbam.trace import format_trace, memory_needed, trace

    n, c, h, w = args.shape
    dtype = np.dtype(args.dtype)
    needed = memory_needed(args.shape, args.reduction, args.kernel_size, dtype)
    available = _available_memory()
    if available is not None and needed > available:
        raise UsageError(
            f"--shape {n} {c} {h} {w}: tracing needs about {needed / 2**30:.3g} GiB of memory, "
            f"{available / 2**30:.3g} GiB are available; choose a smaller --shape"
        )
    module = CBAM(c, reduction=args.reduction, kernel_size=args.kernel_size, seed=args.seed)
    x = np.random.default_rng(args.seed).standard_normal((n, c, h, w)).astype(dtype)
    print(
        f"CBAM(channels={c}, reduction={args.reduction}, kernel_size={args.kernel_size}) on x of "
        f"shape {x.shape}, {args.dtype}, standard normal (seed {args.seed})\n"
    )
    print(format_trace(trace(module, x)))
    return 0


# -- npcbam train ---------------------------------------------------------------------------------


def _weights_path(args: argparse.Namespace) -> Path:
    """Where the weights go; refused before training if they could not be written there."""
    path = Path(args.out or f"npcbam-{args.task}-{args.attention}.npz")
    folder = path.parent
    if path.is_dir():
        raise UsageError(
            f"--out {args.out}: is a directory; give a file name, e.g. "
            f"{path / f'npcbam-{args.task}-{args.attention}.npz'}"
        )
    if not folder.is_dir():
        raise UsageError(f"--out {path}: the directory {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"--out {path}: the directory {folder} is not writable")
    return path


def _train(args: argparse.Namespace) -> int:
    from npcbam.data import load_task
    from npcbam.train import TrainConfig, accuracy, build_model, train_classifier
    from npcbam.weights import load_weights, save_weights

    config = TrainConfig(
        task=args.task,
        attention=args.attention,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        n_train=args.n_train,
        n_test=args.n_test,
        seed=args.seed,
        attention_stats=args.attention_stats,
        blas_threads=args.blas_threads or None,
    )
    out = _weights_path(args)  # before training: a bad --out must not cost a training run
    result = train_classifier(config, log=lambda line: print(line, flush=True))
    try:
        path = save_weights(result.model, out)
    except OSError as error:
        raise UsageError(f"--out {out}: cannot write the weights: {error}") from None
    # read the file back (without pickle) into a fresh model: the saved weights reproduce
    # the reported accuracy, or the run fails
    _, test_set = load_task(config.task, 1, config.n_test, seed=config.seed)
    reloaded = build_model(dataclasses.replace(config, seed=config.seed + 1), test_set)
    load_weights(reloaded, path)
    reloaded_accuracy = accuracy(reloaded, test_set)
    if reloaded_accuracy != result.test_accuracy:
        print(
            f"npcbam train: error: weights reloaded from {path} give test accuracy "
            f"{reloaded_accuracy}, not {result.test_accuracy}",
            file=sys.stderr,
        )
        return 1
    summary = result.summary()
    print(
        f"test accuracy {result.test_accuracy:.3f} after {result.train_seconds:.1f} s; weights "
        f"saved to {path.resolve()} (reloaded: same accuracy)"
    )
    if result.attention_in_box is not None:
        box, init = result.attention_in_box, result.attention_in_box_at_init
        print(
            f"attention on the object's box (the box covers {box['box_area']:.1%} of the image: "
            "what a uniform or position-blind map scores)\n"
            f"  {'map':<18} {'peak in box':>12} {'(at init)':>10} {'mass in box':>12} "
            f"{'(at init)':>10}"
        )
        for name, stats in box.items():
            if name != "box_area":
                print(
                    f"  {name:<18} {stats['peak_in_box']:>12.1%} "
                    f"{init[name]['peak_in_box']:>10.1%} {stats['mass_share']:>12.1%} "
                    f"{init[name]['mass_share']:>10.1%}"
                )
    if args.json:
        summary["weights"] = str(path)
        print(json.dumps(summary))
    return 0


# -- the parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npcbam",
        description="CBAM in NumPy with manual backprop: gradient checks, traces, training.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from npcbam.selfcheck import check_names

    check = commands.add_parser(
        "gradcheck",
        help="finite-difference check of every op and module; exit 1 on failure",
        description=GRADCHECK_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of the inputs, weights and upstream gradients (default: 0)",
    )
    check.add_argument(
        "--only",
        nargs="+",
        action="extend",
        metavar="NAME",
        help="run only these checks, by name (e.g. --only relu CBAM); the names: "
        + ", ".join(check_names()),
    )
    check.set_defaults(run=_gradcheck, memory_hint="")

    tr = commands.add_parser(
        "trace",
        help="print every intermediate of one CBAM forward",
        description="Run one CBAM forward on a standard normal input and print, for every "
        "intermediate of the paper's equations, its shape, dtype, min, mean, max and std.",
    )
    tr.add_argument(
        "--shape",
        type=positive_int,
        nargs=4,
        default=(2, 32, 8, 8),
        metavar=("N", "C", "H", "W"),
        help="input shape: batch, channels, height, width (default: 2 32 8 8)",
    )
    tr.add_argument(
        "--reduction",
        type=positive_int,
        default=16,
        help="reduction ratio r of the shared MLP, C -> C // r -> C (default: 16)",
    )
    tr.add_argument(
        "--kernel-size",
        type=odd_positive_int,
        default=7,
        help="odd size k of the spatial attention's k x k convolution (default: 7)",
    )
    tr.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="dtype of the input, hence of every intermediate (default: float32)",
    )
    tr.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of input and weights (default: 0)"
    )
    tr.set_defaults(run=_trace, memory_hint=" for this --shape; choose a smaller one")

    from npcbam.data import TASKS
    from npcbam.nn.residual import ATTENTIONS
    from npcbam.train import TrainConfig

    defaults = TrainConfig()
    fit = commands.add_parser(
        "train",
        help="train the demo classifier on a synthetic task, save its weights, report accuracy",
        description="Train the small residual classifier (stem conv, two blocks with attention, "
        "global average pooling, Linear) with Adam and the manual backward on a synthetic "
        "task, print the accuracies per epoch, save the weights to an .npz file, read them "
        "back and check they give the same test accuracy. A seeded run gives the same model "
        "bit for bit, however many threads the machine's BLAS would use.",
    )
    fit.add_argument(
        "--task",
        choices=TASKS,
        default=defaults.task,
        help=f"'where': find one of four glyphs among clutter (spatial attention's job); "
        f"'what': find the 2 informative channels of 16 (channel attention's job) "
        f"(default: {defaults.task})",
    )
    fit.add_argument(
        "--attention",
        choices=ATTENTIONS,
        default=defaults.attention,
        help=f"attention in every block (default: {defaults.attention}; 'none' is the baseline)",
    )
    for flag, kind, text in [
        ("--epochs", positive_int, "passes over the training set"),
        ("--batch-size", positive_int, "images per step"),
        ("--lr", positive_float, "Adam's learning rate"),
        ("--n-train", positive_int, "training images"),
        ("--n-test", positive_int, "test images"),
        ("--seed", non_negative_int, "seed of data, weights and batch order"),
    ]:
        default = getattr(defaults, flag[2:].replace("-", "_"))
        fit.add_argument(flag, type=kind, default=default, help=f"{text} (default: {default})")
    fit.add_argument(
        "--blas-threads",
        type=non_negative_int,
        default=defaults.blas_threads,
        metavar="N",
        help=f"threads of NumPy's BLAS during training; a seeded run is bit-identical for a "
        f"given N; 0 keeps the environment's setting, whose results then depend on it "
        f"(default: {defaults.blas_threads})",
    )
    fit.add_argument(
        "--no-attention-stats",
        dest="attention_stats",
        action="store_false",
        help="skip the attention statistics of the 'where' task: Grad-CAM and spatial maps on "
        "the test set, before and after training, in float64 (the JSON's attention_in_box and "
        "attention_in_box_at_init are then null). With the other defaults they took about 1.5 s "
        "of the 20 s of npcbam train (one run each on a 2-core machine with nothing else "
        "running)",
    )
    fit.add_argument(
        "--out",
        metavar="PATH",
        help="file to save the weights to (.npz added when missing); its directory must exist "
        "(default: npcbam-<task>-<attention>.npz in the current directory)",
    )
    fit.add_argument(
        "--json",
        action="store_true",
        help="also print the results as one JSON object, on the last line",
    )
    fit.set_defaults(
        run=_train, memory_hint="; choose a smaller --n-train, --n-test or --batch-size"
    )

    from npcbam.exercises import commands as exercise_commands
    from npcbam.exercises import grade

    exercise_commands.add_commands(commands)  # npcbam exercises list | start DIR
    grade.add_commands(commands)  # npcbam grade SUBMISSION...
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def fail(message: str, status: int = 2) -> int:
        print(f"npcbam {args.command}: error: {message}", file=sys.stderr)
        return status

    try:
        return args.run(args)
    except (UsageError, ValueError, TypeError) as error:  # bad arguments: say what, no traceback
        return fail(str(error))
    except MemoryError:
        return fail(f"not enough memory{getattr(args, 'memory_hint', '')}")
    except OSError as error:
        return fail(str(error))
    except KeyboardInterrupt:
        return fail("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
