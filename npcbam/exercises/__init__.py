"""Exercises that check themselves: write a backward pass, get told what is wrong.

Each exercise asks for one or more functions with fixed signatures (explicit arrays in and
out). :func:`check` runs yours on generated cases, compares the outputs with npcbam's own ops
at a stated float64 tolerance, and prints a short report: PASS with the worst error, or FAIL
with the wrong output, where, expected and got, and, when your outputs equal a catalogued
mistake, its name ("your x̄ is the right one without the 1/(H·W) of the average pool") and
where to read about it.

>>> from npcbam.exercises import check
>>> def relu_backward(dh, p):
...     return dh * (p > 0)
>>> check("relu", relu_backward).passed  # doctest: +ELLIPSIS
PASS relu (1/1 points): ...
True

``npcbam exercises start DIR`` writes the exercise notebooks; ``npcbam grade`` grades them.
"""

from __future__ import annotations

import inspect
import os

from npcbam.exercises.catalogue import (
    activations,
    attention,
    convolution,
    family,
    open_gate,
    pooling,
)
from npcbam.exercises.checker import Result, evaluate_exercise
from npcbam.exercises.registry import Exercise, Misconception
from npcbam.exercises.runner import LocalRunner, Runner

EXERCISES: dict[str, Exercise] = {
    exercise.name: exercise
    for module in (activations, pooling, convolution, attention, open_gate, family)
    for exercise in module.EXERCISES
}

__all__ = ["EXERCISES", "Exercise", "Misconception", "Result", "check", "evaluate"]


def _exercise(name: str) -> Exercise:
    if name not in EXERCISES:
        raise ValueError(f"no exercise named {name!r}; the exercises are: {', '.join(EXERCISES)}")
    return EXERCISES[name]


def evaluate(name: str, runner: Runner, seed: int = 0) -> Result:
    """Check the functions reached through ``runner`` on exercise ``name``.

    Parameters
    ----------
    name : str
        A key of ``EXERCISES``.
    runner : Runner
        Calls the submission's functions (:class:`~npcbam.exercises.runner.LocalRunner` in a
        notebook, the grader's subprocess runner in ``npcbam grade``).
    seed : int
        Seeds the cases.

    Returns
    -------
    Result
        ``status``, ``score`` and the ``report`` text.
    """
    return evaluate_exercise(_exercise(name), runner, seed)


def check(name: str, *functions, seed: int = 0) -> Result | None:
    """Check your functions for exercise ``name`` and print the report.

    Parameters
    ----------
    name : str
        The exercise, e.g. ``"global_max_pool"`` (``npcbam exercises list`` lists them).
    *functions : callable
        Your functions, in the order of ``EXERCISES[name].functions``. When none are given,
        they are looked up by name among the caller's globals (the notebook's variables).
    seed : int
        Seeds the cases.

    Returns
    -------
    Result or None
        The result (``result.passed``, ``result.report``); None when the environment
        variable ``NPCBAM_GRADING`` is ``"1"``: while ``npcbam grade`` executes a submission,
        the submission's own ``check`` calls do nothing.
    """
    if os.environ.get("NPCBAM_GRADING") == "1":
        return None
    exercise = _exercise(name)
    if not functions:
        caller = inspect.currentframe().f_back.f_globals
        found = {n: caller[n] for n in exercise.functions if n in caller}
    elif len(functions) != len(exercise.functions):
        raise TypeError(
            f"check({name!r}, ...) takes {len(exercise.functions)} function(s): "
            f"{', '.join(exercise.functions)}; got {len(functions)}"
        )
    else:
        found = dict(zip(exercise.functions, functions))
    result = evaluate_exercise(exercise, LocalRunner(found), seed)
    print(result.report)
    return result
