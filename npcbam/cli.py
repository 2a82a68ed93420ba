"""Command line: ``npcbam gradcheck`` and ``npcbam trace`` (also ``python -m npcbam``)."""

from __future__ import annotations

import argparse
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
