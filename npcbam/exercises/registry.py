r"""What an exercise is: a function to write, its reference, its cases, its known mistakes.

An :class:`Exercise` has one or more :class:`Part`\ s, each a function the student writes with a
fixed signature (explicit arrays in, a tuple of arrays out; no caches). A part knows

* its **reference**: npcbam's own ops or modules, called (never a copy of them);
* its **cases**: float64 inputs drawn from a seeded generator, distinct values kept away from
  max ties and ReLU kinks (except where a tie *is* the lesson), and the edge shapes;
* its **misconceptions**: named wrong programs, each the reference with one thing changed
  (:mod:`npcbam.exercises.planting`), with the sentence that explains the mistake.

The checker (:mod:`npcbam.exercises.checker`) runs the student's function on the cases and
compares it with the reference and with every misconception.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np

from npcbam.exercises.planting import planted

# Tolerance of the comparison with the reference, per output array ``e`` (float64):
# |got - e| <= ATOL_FACTOR * max(1, max|e|) + RTOL * |e|, element by element. Rounding of a
# correct implementation written differently (loops, another summation order) stays near
# 1e-15; the smallest planted mutation (a result scaled by 1.01) is 1e-2 away.
RTOL = 1e-7
ATOL_FACTOR = 1e-9


@dataclass(frozen=True)
class Case:
    """One set of arguments of a part's function, with a label for the report."""

    label: str  # e.g. "N=2, C=8, H=5, W=4" or "ties in x[0, 1]"
    args: tuple


@dataclass(frozen=True)
class Misconception:
    """A named mistake: the reference with one thing changed.

    Exactly one of ``plants`` and ``variant`` is given.

    Attributes
    ----------
    key : str
        Short identifier, e.g. ``"avg_pool_missing_scale"``.
    message : str
        What the student did, in the notebooks' notation, e.g. "your x̄ is the right one without
        the 1/(H·W) of the average pool".
    plants : callable returning dict of str to callable, optional
        Fresh replacements of npcbam ops (by name) for one run of the reference
        (:func:`npcbam.exercises.planting.planted`); called once per run so that a
        replacement may count its calls.
    variant : callable, optional
        The wrong program itself, with the part's signature.
    """

    key: str
    message: str
    plants: Callable[[], dict[str, Callable]] | None = None
    variant: Callable | None = None

    def function(self, reference: Callable) -> Callable:
        """The wrong program, with the signature of ``reference``."""
        if self.variant is not None:
            return self.variant

        def wrong(*args):
            with planted(self.plants()) if self.plants is not None else nullcontext():
                return reference(*args)

        wrong.__name__ = f"{reference.__name__}__{self.key}"
        return wrong


@dataclass(frozen=True)
class Part:
    """One function of an exercise.

    Attributes
    ----------
    function : str
        The name the student's function must have, e.g. ``"global_max_pool_backward"``.
    signature : str
        As shown in reports, e.g. ``"global_max_pool_backward(dm, x) -> dx"``.
    outputs : tuple of (str, str)
        Each returned array: its name in the code and in the notebooks' notation, e.g.
        ``("dx", "x̄")``.
    reference : callable
        npcbam's answer, same signature, returning a tuple of arrays (one per output).
    cases : callable (numpy Generator) -> list of Case
    misconceptions : tuple of Misconception
    """

    function: str
    signature: str
    outputs: tuple[tuple[str, str], ...]
    reference: Callable
    cases: Callable[[np.random.Generator], list[Case]]
    misconceptions: tuple[Misconception, ...] = ()


@dataclass(frozen=True)
class Exercise:
    """One exercise: its parts, points, and where to read about it.

    ``kind`` is "compare" (every part compared with its reference on the cases, plus a
    finite-difference check of the student's own forward against their backward when
    ``gradient_pair`` names one) or "open" (the student's own design, proved by finite
    differences alone: :mod:`npcbam.exercises.catalogue.open_gate`).
    """

    name: str
    title: str
    points: int
    notebook: str  # the exercise notebook's stem, e.g. "ex03_pooling"
    reading: str  # the reading notebook's section, e.g. "03_pooling.ipynb §3"
    theory: str  # the theory page, e.g. "docs/theory/pooling.md"
    parts: tuple[Part, ...]
    kind: str = "compare"
    # (forward function, backward function), both of one array: the student's backward is
    # checked against finite differences of the student's own forward (a self-consistency check)
    gradient_pair: tuple[str, str] | None = None
    open_check: Callable | None = field(default=None, compare=False)

    @property
    def functions(self) -> tuple[str, ...]:
        """The names of the functions a submission must define, in order."""
        return tuple(part.function for part in self.parts)

    @property
    def misconceptions(self) -> tuple[Misconception, ...]:
        return tuple(m for part in self.parts for m in part.misconceptions)

    def part(self, function: str) -> Part:
        for part in self.parts:
            if part.function == function:
                return part
        raise KeyError(f"exercise {self.name!r} has no function {function!r}")

    def reference_functions(self) -> dict[str, Callable]:
        """The reference of every part, by function name: a complete, correct submission."""
        return {part.function: part.reference for part in self.parts}
