"""``npcbam exercises list`` and ``npcbam exercises start DIR [--solutions] [--force]``."""

from __future__ import annotations

import argparse
import sys


def add_commands(commands) -> None:
    """Register the ``exercises`` subcommand on the CLI's subparsers."""
    parser = commands.add_parser(
        "exercises",
        help="the exercise notebooks: list the exercises, or write the notebooks into a folder",
    )
    actions = parser.add_subparsers(dest="exercises_command", required=True)
    lister = actions.add_parser("list", help="the exercises: name, points, notebook, title")
    lister.set_defaults(run=_list)
    start = actions.add_parser(
        "start", help="write the student notebooks (or, with --solutions, the instructor ones)"
    )
    start.add_argument("directory", help="where to write them (created if missing)")
    start.add_argument(
        "--solutions",
        action="store_true",
        help="write the instructor versions, solutions included (for teachers)",
    )
    start.add_argument(
        "--force", action="store_true", help="overwrite exercise notebooks already there"
    )
    start.set_defaults(run=_start)


def _list(args: argparse.Namespace) -> int:
    from npcbam.exercises import EXERCISES

    rows = [("name", "points", "notebook", "title")]
    rows += [(e.name, str(e.points), e.notebook, e.title) for e in EXERCISES.values()]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    total = sum(e.points for e in EXERCISES.values())
    print(f"\n{len(EXERCISES)} exercises, {total} points. Start with: npcbam exercises start DIR")
    return 0


def _start(args: argparse.Namespace) -> int:
    from npcbam.exercises import EXERCISES
    from npcbam.exercises.build import write_notebooks

    try:
        paths = write_notebooks(args.directory, solutions=args.solutions, force=args.force)
    except OSError as error:  # an existing notebook (without --force), a file in the way, ...
        print(f"npcbam exercises start: error: {error}", file=sys.stderr)
        return 1
    kind = "instructor notebooks (with the solutions)" if args.solutions else "student notebooks"
    print(f"Wrote {len(paths)} {kind} to {args.directory}:")
    for path in paths:
        names = ", ".join(e.name for e in EXERCISES.values() if e.notebook == path.stem)
        print(f"  {path}  ({names})")
    print(
        "\nNext steps:\n"
        f"  1. open them: jupyter lab {args.directory}  (or: jupyter notebook {args.directory})\n"
        "  2. in each notebook: derive, fill in the functions, run the check cells\n"
        f"  3. score them, as a teacher would: npcbam grade {args.directory}/*.ipynb"
    )
    return 0
