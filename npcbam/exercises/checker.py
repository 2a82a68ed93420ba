"""Checking a submission against one exercise: run, compare, diagnose, report.

For every part of the exercise: the reference's outputs are computed first, from the
checker's own copies of the cases; then the student's function runs on fresh copies (through
a :class:`~npcbam.exercises.runner.Runner`); then each output is compared. On a failure the
student's outputs are compared with every catalogued misconception too: a match with exactly
one of them names the mistake; several matches are reported as such (the cases could not tell
them apart); no match gives the location alone. Every check's outcome is reported: nothing
is summarised optimistically.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from npcbam.exercises import feedback
from npcbam.exercises.differences import central_differences, compare_with_differences
from npcbam.exercises.registry import Case, Exercise, Part
from npcbam.exercises.runner import (
    BAD_RETURN,
    EXCEPTION,
    MISSING,
    NOT_ATTEMPTED,
    TIMEOUT,
    Call,
    Runner,
    call_function,
)

PASSED, FAILED, NOT_ATTEMPTED_STATUS, MISSING_STATUS, ERROR = (
    "passed",
    "failed",
    "not attempted",
    "missing",
    "error",
)


@dataclass
class Result:
    """The outcome of one exercise.

    Attributes
    ----------
    name, title : str
    points : int
        The exercise's maximum score.
    score : int
        ``points`` if passed, else 0.
    status : {"passed", "failed", "not attempted", "missing", "error"}
    report : str
        The feedback, as printed by :func:`npcbam.exercises.check`.
    diagnoses : list of str
        The keys of the misconceptions the submission matched (empty when none did).
    worst_error : float or None
        On a pass, the largest difference from the reference, relative to max(1, max|e|).
    """

    name: str
    title: str
    points: int
    score: int
    status: str
    report: str
    diagnoses: list[str] = field(default_factory=list)
    worst_error: float | None = None

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def __repr__(self) -> str:
        return f"<{self.name}: {self.status}, {self.score}/{self.points} points>"


@dataclass
class PartOutcome:
    status: str
    lines: list[str]
    diagnoses: list[str] = field(default_factory=list)
    worst: float = 0.0
    calls: list[Call] = field(default_factory=list)


def reference_outputs(part: Part, case: Case) -> tuple[np.ndarray, ...]:
    """The reference's outputs on a private copy of the case's arguments."""
    value = part.reference(*copy.deepcopy(case.args))
    outputs = value if isinstance(value, tuple) else (value,)
    return tuple(np.asarray(v, dtype=np.float64) for v in outputs)


def _failure_outcome(part: Part, cases: list[Case], calls: list[Call]) -> PartOutcome | None:
    """The outcome when a call failed (not attempted, missing, raised, ...), else None."""
    kinds = [call.failure for call in calls]
    if all(kind == MISSING for kind in kinds):
        return PartOutcome(
            MISSING_STATUS, [f"no function named {part.function}: define {part.signature}"]
        )
    if all(kind == NOT_ATTEMPTED for kind in kinds):
        return PartOutcome(
            NOT_ATTEMPTED_STATUS,
            [f"not attempted: {part.function} still raises NotImplementedError"],
        )
    for case, call in zip(cases, calls):
        if call.failure == NOT_ATTEMPTED:
            return PartOutcome(
                FAILED, [f"raised NotImplementedError on case {case.label!r} (not finished?)"]
            )
        if call.failure in (EXCEPTION, TIMEOUT, MISSING):
            what = "did not finish in time" if call.failure == TIMEOUT else "raised"
            return PartOutcome(ERROR, [f"{what} on case {case.label!r}: {call.message}".rstrip()])
        if call.failure == BAD_RETURN:
            return PartOutcome(FAILED, [f"{call.message} on case {case.label!r}"])
    return None


def _problems(part: Part, case: Case, call: Call, expected) -> list[feedback.Mismatch]:
    names = [f"{bar} ({code})" for code, bar in part.outputs]
    outputs = feedback.as_outputs(call.returned, len(expected))
    if outputs is None:
        listed = ", ".join(code for code, _ in part.outputs)
        wanted = f"({listed})" if len(expected) > 1 else "one array"
        got = feedback.describe_structure(call.returned)
        return [feedback.Mismatch("structure", f"returned {got}; expected {wanted}")]
    found = []
    for name, got, exp in zip(names, outputs, expected):
        mismatch = feedback.compare_array(got, exp, name)
        if mismatch is not None:
            found.append(mismatch)
    return found


def _diagnose(part: Part, cases: list[Case], calls: list[Call]) -> list[str]:
    """Keys of the misconceptions whose outputs (and warnings) equal the student's on every
    case."""
    matched = []
    for misconception in part.misconceptions:
        wrong = misconception.function(part.reference)
        for case, call in zip(cases, calls):
            planted = call_function(wrong, copy.deepcopy(case.args))
            if planted.failure is not None:
                break
            expected = feedback.as_outputs(planted.returned, len(part.outputs))
            if expected is None or not all(isinstance(e, np.ndarray) for e in expected):
                break
            expected = tuple(np.asarray(e, dtype=np.float64) for e in expected)
            if not feedback.outputs_match(call.returned, expected):
                break
            if bool(planted.warnings) != bool(call.warnings):
                break
        else:
            matched.append(misconception.key)
    return matched


def check_part(part: Part, runner: Runner, rng: np.random.Generator) -> PartOutcome:
    """Run one part's cases through the runner and judge them."""
    cases = part.cases(rng)
    expected = [reference_outputs(part, case) for case in cases]
    calls = runner.run(part.function, [case.args for case in cases])
    failure = _failure_outcome(part, cases, calls)
    if failure is not None:
        failure.calls = calls
        return failure
    lines: list[str] = []
    worst = 0.0
    for case, call, exp in zip(cases, calls, expected):
        problems = _problems(part, case, call, exp)
        if problems and not lines:
            lines.append(feedback.location_line(problems[0], case.label))
            others = [problem.label for problem in problems[1:]]
            if others:
                lines.append(f"wrong too on that case: {', '.join(others)}")
        if not problems:
            outputs = feedback.as_outputs(call.returned, len(exp))
            worst = max([worst, *(feedback.worst_error(g, e) for g, e in zip(outputs, exp))])
    for case, call in zip(cases, calls):
        if call.modified:
            names = ", ".join(_argument_name(part, i) for i in call.modified)
            lines.append(
                f"changed its input {names} in place on case {case.label!r}: a backward must not "
                f"modify its arguments (another branch may still need them); work on a copy"
            )
            break
    for case, call in zip(cases, calls):
        if call.warnings:
            lines.append(
                f"raised {call.warnings[0]} on case {case.label!r} (npcbam's reference raises "
                f"no warning)"
            )
            break
    if not lines:
        return PartOutcome(PASSED, [], worst=worst, calls=calls)
    diagnoses = _diagnose(part, cases, calls)
    return PartOutcome(FAILED, lines, diagnoses, calls=calls)


def _argument_name(part: Part, position: int) -> str:
    inside = part.signature.split("(", 1)[1].split(")", 1)[0]
    names = [name.strip() for name in inside.split(",")]
    return names[position] if position < len(names) else f"#{position}"


def _messages(part: Part, keys: list[str]) -> list[str]:
    by_key = {m.key: m.message for m in part.misconceptions}
    if len(keys) == 1:
        return [f"Diagnosis: {by_key[keys[0]]}."]
    if keys:
        listed = "; or ".join(by_key[k] for k in keys)
        return [f"Diagnosis: one of these known mistakes (these cases cannot tell): {listed}."]
    return []


def _gradient_pair_lines(exercise: Exercise, runner: Runner, rng) -> tuple[bool, list[str]]:
    """Finite differences of the student's own forward against their own backward."""
    forward, backward = exercise.gradient_pair
    x = rng.permutation(np.linspace(-4.0, 4.0, 12)).reshape(3, 4)
    dout = rng.standard_normal(x.shape)
    differences = central_differences(runner, forward, (x,), 0, dout)
    if differences.failure:
        return False, [f"finite differences: {differences.failure}"]
    [call] = runner.run(backward, [(dout, x)])
    if call.failure:
        return False, [f"finite differences: {backward} failed: {call.message or call.failure}"]
    ok, rel, compared = compare_with_differences(call.returned, differences.numeric)
    verdict = "agree with" if ok else "DISAGREE with"
    return ok, [
        f"finite differences of your {forward} {verdict} your {backward} "
        f"({compared} coordinates, worst relative error {rel:.1e})"
    ]


def evaluate_exercise(exercise: Exercise, runner: Runner, seed: int = 0) -> Result:
    """Check a submission (reached through ``runner``) on one exercise: see the module
    docstring. Never raises for anything the submission does."""
    if exercise.kind == "open":
        return exercise.open_check(exercise, runner, seed)
    outcomes = []
    for index, part in enumerate(exercise.parts):
        rng = np.random.default_rng([seed, index])
        outcomes.append(check_part(part, runner, rng))
    statuses = [o.status for o in outcomes]
    body: list[str] = []
    for part, outcome in zip(exercise.parts, outcomes):
        if len(exercise.parts) > 1 or outcome.status != PASSED:
            body.append(f"{part.signature}: {outcome.status.upper()}")
            body.extend(f"  {line}" for line in outcome.lines)
            body.extend(f"  {line}" for line in _messages(part, outcome.diagnoses))
    worst = max(o.worst for o in outcomes)
    if all(s == PASSED for s in statuses) and exercise.gradient_pair:
        ok, lines = _gradient_pair_lines(exercise, runner, np.random.default_rng([seed, 99]))
        body.extend(lines)
        if not ok:
            statuses.append(FAILED)
    if all(s == PASSED for s in statuses):
        status = PASSED
    elif all(s == NOT_ATTEMPTED_STATUS for s in statuses):
        status = NOT_ATTEMPTED_STATUS
    elif all(s in (MISSING_STATUS, NOT_ATTEMPTED_STATUS) for s in statuses):
        status = MISSING_STATUS
    elif ERROR in statuses:
        status = ERROR
    else:
        status = FAILED
    diagnoses = [key for o in outcomes for key in o.diagnoses]
    n_cases = sum(len(o.calls) for o in outcomes)
    if status == PASSED:
        head = (
            f"PASS {exercise.name} ({exercise.points}/{exercise.points} points): {n_cases} "
            f"cases, worst difference from npcbam's reference {worst:.1e}"
        )
        body.insert(0, f"(float64; passes when {feedback.TOLERANCE_TEXT})")
        body = [line for line in body if not line.endswith(": PASSED")]
    else:
        label = {NOT_ATTEMPTED_STATUS: "NOT ATTEMPTED", MISSING_STATUS: "MISSING"}.get(
            status, "FAIL"
        )
        head = f"{label} {exercise.name} (0/{exercise.points} points)"
    lines = [head, *(f"  {line}" for line in body)]
    if status not in (PASSED, NOT_ATTEMPTED_STATUS, MISSING_STATUS):
        lines.append("  " + feedback.reading_line(exercise.theory, exercise.reading))
    return Result(
        name=exercise.name,
        title=exercise.title,
        points=exercise.points,
        score=exercise.points if status == PASSED else 0,
        status=status,
        report="\n".join(lines),
        diagnoses=diagnoses,
        worst_error=worst if status == PASSED else None,
    )
