"""Command line: ``npcbam gradcheck``, ``npcbam trace`` and ``npcbam train`` (also
``python -m npcbam``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np


def _gradcheck(args: argparse.Namespace) -> int:
    from npcbam.selfcheck import run_all

    print(f"Gradient check of every npcbam op and module (seed {args.seed}):\n", flush=True)
    reports = run_all(seed=args.seed)
    for report in reports:
        print(report, end="\n\n", flush=True)
    failed = [r.title.splitlines()[0] for r in reports if not r.passed]
    worst = max(r.max_rel_err for r in reports)
    kinks = sum(r.kinks for r in reports)
    print(
        f"{len(reports) - len(failed)} of {len(reports)} checks passed; worst relative error "
        f"{worst:.2e}; {kinks} kink coordinates skipped"
    )
    for title in failed:
        print(f"FAILED: {title}")
    return 1 if failed else 0


def _trace(args: argparse.Namespace) -> int:
    from npcbam.nn import CBAM
    from npcbam.trace import format_trace, trace

    n, c, h, w = args.shape
    module = CBAM(c, reduction=args.reduction, kernel_size=args.kernel_size, seed=args.seed)
    dtype = np.float32 if args.dtype == "float32" else np.float64
    x = np.random.default_rng(args.seed).standard_normal((n, c, h, w)).astype(dtype)
    print(
        f"CBAM(channels={c}, reduction={args.reduction}, kernel_size={args.kernel_size}) on x of "
        f"shape {x.shape}, {args.dtype}, standard normal (seed {args.seed})\n"
    )
    print(format_trace(trace(module, x)))
    return 0


def _train(args: argparse.Namespace) -> int:
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
    )
    result = train_classifier(config, log=lambda line: print(line, flush=True))
    out = args.out or f"npcbam-{args.task}-{args.attention}.npz"
    path = save_weights(result.model, out)
    # read the file back (without pickle) into a fresh model: the saved weights reproduce
    # the reported accuracy, or the run fails
    from npcbam.data import load_task

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
        f"saved to {path} (reloaded: same accuracy)"
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npcbam", description="CBAM in NumPy with manual backprop: checks and traces."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "gradcheck", help="finite-difference check of every op and module; exit 1 on failure"
    )
    check.add_argument(
        "--seed", type=int, default=0, help="seed of inputs and weights (default: 0)"
    )
    check.set_defaults(run=_gradcheck)
    tr = commands.add_parser("trace", help="print every intermediate of one CBAM forward")
    tr.add_argument(
        "--shape",
        type=int,
        nargs=4,
        default=(2, 32, 8, 8),
        metavar=("N", "C", "H", "W"),
        help="input shape (default: 2 32 8 8)",
    )
    tr.add_argument("--reduction", type=int, default=16, help="r of the MLP (default: 16)")
    tr.add_argument(
        "--kernel-size", type=int, default=7, help="odd spatial kernel size (default: 7)"
    )
    tr.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    tr.add_argument("--seed", type=int, default=0, help="seed of input and weights (default: 0)")
    tr.set_defaults(run=_trace)

    from npcbam.data import TASKS
    from npcbam.nn.residual import ATTENTIONS
    from npcbam.train import TrainConfig

    defaults = TrainConfig()
    fit = commands.add_parser(
        "train",
        help="train the demo classifier on a synthetic task, save its weights, report accuracy",
    )
    fit.add_argument("--task", choices=TASKS, default=defaults.task)
    fit.add_argument(
        "--attention",
        choices=ATTENTIONS,
        default=defaults.attention,
        help=f"attention in every block (default: {defaults.attention}; 'none' is the baseline)",
    )
    for flag, kind, text in [
        ("--epochs", int, "passes over the training set"),
        ("--batch-size", int, "images per step"),
        ("--lr", float, "Adam's learning rate"),
        ("--n-train", int, "training images"),
        ("--n-test", int, "test images"),
        ("--seed", int, "seed of data, weights and batch order"),
    ]:
        default = getattr(defaults, flag[2:].replace("-", "_"))
        fit.add_argument(flag, type=kind, default=default, help=f"{text} (default: {default})")
    fit.add_argument(
        "--out", help="where to save the weights (default: npcbam-<task>-<attention>.npz)"
    )
    fit.add_argument(
        "--json", action="store_true", help="print the results as one JSON object, last line"
    )
    fit.set_defaults(run=_train)

    from npcbam.exercises import commands as exercise_commands
    from npcbam.exercises import grade

    exercise_commands.add_commands(commands)  # npcbam exercises list | start DIR
    grade.add_commands(commands)  # npcbam grade SUBMISSION...
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError) as error:  # bad arguments: say what, not a traceback
        print(f"npcbam {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
