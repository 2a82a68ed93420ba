r"""``npcbam grade``: run submissions in their own processes and score every exercise.

::

    npcbam grade SUBMISSION... [--json results.json] [--timeout SECONDS] [--exercise NAME]

Each SUBMISSION (a student's ``.ipynb`` notebook or a ``.py`` file) is loaded in a process of
its own (:class:`~npcbam.exercises.sandbox.SubprocessRunner`) and checked on its exercises with
:func:`npcbam.exercises.evaluate`, whose reference outputs are computed here, in the grader's
process. Which exercises a file is graded on:

* ``--exercise NAME`` (repeatable): those;
* otherwise, a file whose name contains an exercise notebook's name, in any case
  (``ex03_pooling.ipynb``, ``alice_EX03_pooling.ipynb``), is graded on that notebook's
  exercises;
* any other file (``solutions.py``) on every exercise.

The output is one score table per submission (exercise, points, score, status), the feedback of
every exercise not passed, and what went wrong while loading (a cell that raised, looped or
ended the process). The exit status is 0 whenever grading ran, whatever the scores; 2 for a
usage error (a missing file, an unknown extension, an unknown exercise).

``--json FILE`` writes the results in Gradescope's autograder format
(https://gradescope-autograders.readthedocs.io/en/latest/specs/): one test per graded exercise
(``name``, ``number``, ``score``, ``max_score``, ``status``, ``output``, ``visibility``) and the
total ``score``, ``execution_time`` and ``output``. All the SUBMISSION files of one run go into
that one file, as the work of one student: on Gradescope, ``run_autograder`` runs
``npcbam grade /autograder/submission/*.ipynb --json /autograder/results/results.json``. To
grade a class locally, run one ``npcbam grade`` per student.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from npcbam.exercises.sandbox import DEFAULT_TIMEOUT, SubprocessRunner
from npcbam.exercises.submission import SUFFIXES

PASSED = "passed"


@dataclass(frozen=True)
class ExerciseGrade:
    """One exercise of one submission, as reported (the fields of the checker's Result)."""

    name: str
    title: str
    number: int  # its position in the course, from 1
    points: int
    score: int
    status: str  # "passed", "failed", "not attempted", "missing", "error"
    report: str


@dataclass
class SubmissionGrade:
    """Every graded exercise of one submission, and what went wrong while loading it."""

    path: Path
    grades: list[ExerciseGrade] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unloadable: str | None = None
    seconds: float = 0.0

    @property
    def score(self) -> int:
        return sum(grade.score for grade in self.grades)

    @property
    def points(self) -> int:
        return sum(grade.points for grade in self.grades)


def exercises_for(path: Path, exercises: Mapping, chosen: list[str] | None = None) -> list[str]:
    """The names of the exercises ``path`` is graded on (see the module docstring)."""
    if chosen:
        return [name for name in exercises if name in chosen]
    stem = path.stem.lower()
    matching = [
        name for name, ex in exercises.items() if ex.notebook and ex.notebook.lower() in stem
    ]
    return matching or list(exercises)


def grade_submission(
    path: str | Path,
    names: list[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    exercises: Mapping | None = None,
    evaluate: Callable | None = None,
    runner: SubprocessRunner | None = None,
) -> SubmissionGrade:
    """Grade one submission file.

    Parameters
    ----------
    path : str or Path
        A ``.ipynb`` or ``.py`` file.
    names : list of str, optional
        The exercises to grade (default: :func:`exercises_for` the file).
    timeout : float
        Seconds allowed for each cell (statement) of the submission while it loads, and for
        each batch of calls of one of its functions.
    exercises, evaluate : optional
        The registry and the checker (default: ``npcbam.exercises.EXERCISES`` and
        :func:`npcbam.exercises.evaluate`); tests give their own.
    runner : SubprocessRunner, optional
        The submission's runner, if already started (:func:`grade_all`); closed here.

    Returns
    -------
    SubmissionGrade
        Never raises for anything the submission does; an exercise whose check itself failed
        (a bug of the grader) is graded 0 with status "error" and the error in its report.
    """
    if exercises is None or evaluate is None:
        import npcbam.exercises as registry

        exercises = registry.EXERCISES if exercises is None else exercises
        evaluate = registry.evaluate if evaluate is None else evaluate
    path = Path(path)
    names = exercises_for(path, exercises) if names is None else names
    numbers = {name: i for i, name in enumerate(exercises, start=1)}
    graded = SubmissionGrade(path)
    start = time.perf_counter()
    with runner or SubprocessRunner(path, timeout=timeout) as runner:
        for name in names:
            exercise = exercises[name]
            try:
                result = evaluate(name, runner)
                grade = ExerciseGrade(
                    name,
                    exercise.title,
                    numbers[name],
                    int(result.points),
                    int(result.score),
                    str(result.status),
                    str(result.report),
                )
            except Exception as error:  # the checker's own failure: report it, grade the rest
                report = (
                    f"ERROR {name} (0/{exercise.points} points): the grader could not check "
                    f"this exercise ({type(error).__name__}: {error}); please report it"
                )
                grade = ExerciseGrade(
                    name, exercise.title, numbers[name], exercise.points, 0, "error", report
                )
            graded.grades.append(grade)
        graded.problems = list(runner.problems)
        graded.unloadable = runner.unloadable
    graded.seconds = time.perf_counter() - start
    return graded


def grade_all(
    paths: list[Path], chosen: list[str] | None = None, timeout: float = DEFAULT_TIMEOUT
) -> Iterator[SubmissionGrade]:
    """Grade each file in turn on the real exercises, yielding as each is done.

    The next file's process is started before the current one is graded, so that its loading
    (importing, running its cells) overlaps the current grading; one extra process at most.
    """
    from npcbam.exercises import EXERCISES

    started: dict[int, SubprocessRunner] = {}

    def start(i: int) -> None:
        if i < len(paths) and i not in started:
            started[i] = SubprocessRunner(paths[i], timeout=timeout)
            started[i].start()

    try:
        for i, path in enumerate(paths):
            start(i)
            start(i + 1)
            names = exercises_for(path, EXERCISES, chosen)
            yield grade_submission(path, names, timeout=timeout, runner=started.pop(i))
    finally:
        for runner in started.values():  # stopped early (an interrupt)
            runner.close()


# --- the report ---------------------------------------------------------------------------


def format_submission(graded: SubmissionGrade) -> str:
    """The score table, then what went wrong while loading, then the feedback of every
    exercise not passed."""
    width = max([len("exercise"), *(len(g.name) for g in graded.grades)])
    lines = [
        f"{graded.path.name}: {graded.score} of {graded.points} points "
        f"({_count(len(graded.grades), 'exercise')}, {graded.seconds:.1f} s)",
        "",
        f"  {'#':>2}  {'exercise':<{width}}  points  score  status",
    ]
    for g in graded.grades:
        lines.append(f"  {g.number:>2}  {g.name:<{width}}  {g.points:>6}  {g.score:>5}  {g.status}")
    lines.append(f"  {'':>2}  {'total':<{width}}  {graded.points:>6}  {graded.score:>5}")
    if graded.unloadable:
        lines += ["", f"The submission could not be loaded: {graded.unloadable}"]
    if graded.problems:
        lines += ["", "While loading the submission:"]
        lines += [f"  {problem}" for problem in graded.problems]
    for g in graded.grades:
        if g.status != PASSED:
            lines += ["", g.report]
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def gradescope_results(graded: list[SubmissionGrade]) -> dict:
    """The results of one run in Gradescope's ``results.json`` format.

    One test per graded exercise, numbered by its place in the course (prefixed by the
    submission's position when several submissions were graded on the same exercise).
    """
    counts: dict[str, int] = {}
    for submission in graded:
        for g in submission.grades:
            counts[g.name] = counts.get(g.name, 0) + 1
    repeated = any(count > 1 for count in counts.values())
    several = len(graded) > 1
    tests = []
    for k, submission in enumerate(graded, start=1):
        for g in submission.grades:
            name = f"{g.name}: {g.title}"
            tests.append(
                {
                    "name": f"{name} ({submission.path.name})" if several else name,
                    "number": f"{k}.{g.number}" if repeated else str(g.number),
                    "score": float(g.score),
                    "max_score": float(g.points),
                    "status": "passed" if g.status == PASSED else "failed",
                    "output": g.report,
                    "visibility": "visible",
                }
            )
    summary = []
    for submission in graded:
        summary.append(f"{submission.path.name}: {submission.score} of {submission.points} points")
        if submission.unloadable:
            summary.append(f"  could not be loaded: {submission.unloadable}")
        summary += [f"  while loading: {problem}" for problem in submission.problems]
    return {
        "score": float(sum(s.score for s in graded)),
        "execution_time": round(sum(s.seconds for s in graded), 2),
        "output": "\n".join(summary),
        "output_format": "text",
        "tests": tests,
    }


# --- the command --------------------------------------------------------------------------


def add_commands(commands) -> None:
    """Register the ``grade`` subcommand on the CLI's subparsers."""
    parser = commands.add_parser(
        "grade",
        help="grade student notebooks or .py files, each in its own process",
        description=(
            "Grade each SUBMISSION (.ipynb or .py) on its exercises: those of the exercise "
            "notebook its file name contains, else every exercise. Prints a score table and "
            "the feedback; exit status 0 whenever grading ran."
        ),
    )
    parser.add_argument("submissions", nargs="+", metavar="SUBMISSION")
    parser.add_argument(
        "--json",
        metavar="FILE",
        help="also write the results in Gradescope's results.json format (all submissions of "
        "the run in one file, as one student's work)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="time limit for each cell while loading and for each function's calls "
        f"(default: {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--exercise",
        action="append",
        metavar="NAME",
        help="grade only this exercise (repeatable; see `npcbam exercises list`)",
    )
    parser.set_defaults(run=_grade)


def _grade(args) -> int:
    from npcbam.exercises import EXERCISES

    paths = [Path(p) for p in args.submissions]
    for path in paths:  # usage errors first, before anything runs
        if path.suffix not in SUFFIXES:
            raise ValueError(f"{path}: expected a .ipynb notebook or a .py file")
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
    if not 0 < args.timeout < math.inf:
        raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    unknown = [name for name in args.exercise or [] if name not in EXERCISES]
    if unknown:
        raise ValueError(f"unknown exercise {unknown[0]!r}; known: {', '.join(EXERCISES)}")
    graded = []
    for submission in grade_all(paths, args.exercise, timeout=args.timeout):
        graded.append(submission)
        print(format_submission(submission), end="\n\n", flush=True)
    if len(graded) > 1:
        score, points = sum(s.score for s in graded), sum(s.points for s in graded)
        print(f"All {len(graded)} submissions: {score} of {points} points")
    if args.json:
        results = gradescope_results(graded)
        text = json.dumps(results, indent=2, ensure_ascii=False)  # x̄ readable in the file
        Path(args.json).write_text(text + "\n", encoding="utf-8")
        print(f"Gradescope results written to {args.json}")
    return 0
