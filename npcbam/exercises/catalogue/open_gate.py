"""The open exercise: design your own attention gate, and prove its backward.

There is no reference to compare with: the student's forward is the definition. The checker
asks for three functions, ``my_gate_init(channels, seed) -> params``,
``my_gate_forward(x, params) -> y`` and ``my_gate_backward(dy, x, params) -> (dx, dparams)``,
and checks

* the contract: params a dict of float64 arrays; y of x's shape, finite, without warnings;
  y depends on the parameters (a gate that learns something) and on x;
* the gradients: x̄ and every parameter's gradient against central differences of the
  student's own forward (order 4, two step sizes to tell a kink from a slope), on two inputs.
"""

from __future__ import annotations

import numpy as np

from npcbam.exercises.catalogue.cases import upstream, values
from npcbam.exercises.differences import central_differences, compare_with_differences
from npcbam.exercises.registry import Exercise, Part

CHANNELS = 4
SHAPES = ((2, CHANNELS, 3, 3), (1, CHANNELS, 2, 5))
MAX_PARAMETERS = 512  # finite differences call the forward 8 times per coordinate


def _problem_with_params(params) -> str:
    if not isinstance(params, dict) or not params:
        return f"my_gate_init returned {type(params).__name__}; expected a non-empty dict of arrays"
    for key, value in params.items():
        if not isinstance(value, np.ndarray) or value.dtype != np.float64:
            return f"params[{key!r}] is not a float64 array"
        if not np.isfinite(value).all():
            return f"params[{key!r}] is not finite"
    size = sum(v.size for v in params.values())
    if size > MAX_PARAMETERS:
        return f"{size} parameters; keep it at most {MAX_PARAMETERS} for this check"
    return ""


def check_open_gate(exercise: Exercise, runner, seed: int):
    from npcbam.exercises.checker import (
        ERROR,
        FAILED,
        MISSING_STATUS,
        NOT_ATTEMPTED_STATUS,
        PASSED,
        Result,
    )

    lines: list[str] = []

    def result(status: str) -> Result:
        label = {PASSED: "PASS", NOT_ATTEMPTED_STATUS: "NOT ATTEMPTED", MISSING_STATUS: "MISSING"}
        head = f"{label.get(status, 'FAIL')} {exercise.name} "
        head += f"({exercise.points if status == PASSED else 0}/{exercise.points} points)"
        report = "\n".join([head, *(f"  {line}" for line in lines)])
        score = exercise.points if status == PASSED else 0
        return Result(exercise.name, exercise.title, exercise.points, score, status, report)

    rng = np.random.default_rng([seed, 7])
    [init] = runner.run("my_gate_init", [(CHANNELS, seed)])
    if init.failure in ("missing", "not attempted"):
        lines.append(f"my_gate_init: {init.failure}")
        return result(MISSING_STATUS if init.failure == "missing" else NOT_ATTEMPTED_STATUS)
    if init.failure:
        lines.append(f"my_gate_init failed: {init.message or init.failure}")
        return result(ERROR)
    params = init.returned
    problem = _problem_with_params(params)
    if problem:
        lines.append(problem)
        return result(FAILED)
    passed = True
    for shape in SHAPES:
        x = values(rng, shape)
        dy = upstream(rng, shape)
        [forward] = runner.run("my_gate_forward", [(x, params)])
        if forward.failure:
            kind = forward.failure
            lines.append(f"my_gate_forward on x of shape {shape}: {forward.message or kind}")
            status = {"not attempted": NOT_ATTEMPTED_STATUS, "missing": MISSING_STATUS}
            return result(status.get(kind, ERROR))
        y = forward.returned
        if not isinstance(y, np.ndarray) or y.shape != shape or y.dtype != np.float64:
            got = getattr(y, "shape", type(y).__name__)
            lines.append(
                f"my_gate_forward must return a float64 array of x's shape {shape}; got {got}"
            )
            return result(FAILED)
        if forward.warnings or not np.isfinite(y).all():
            lines.append(f"my_gate_forward: not finite or warned ({', '.join(forward.warnings)})")
            return result(FAILED)
        [backward] = runner.run("my_gate_backward", [(dy, x, params)])
        if backward.failure:
            lines.append(f"my_gate_backward: {backward.message or backward.failure}")
            status = {"not attempted": NOT_ATTEMPTED_STATUS, "missing": MISSING_STATUS}
            return result(status.get(backward.failure, ERROR))
        returned = backward.returned
        if not (
            isinstance(returned, tuple)
            and len(returned) == 2
            and isinstance(returned[1], dict)
            and set(returned[1]) == set(params)
        ):
            lines.append(
                "my_gate_backward must return (dx, dparams) with dparams a dict with the keys "
                f"of params {sorted(params)}"
            )
            return result(FAILED)
        dx, dparams = returned
        checks = [
            ("x̄ (dx)", dx, central_differences(runner, "my_gate_forward", (x, params), 0, dy))
        ]
        for key in params:
            differences = central_differences(runner, "my_gate_forward", (x, params), 1, dy, key)
            checks.append((f"gradient of params[{key!r}]", dparams[key], differences))
        depends = False
        for name, analytic, differences in checks:
            if differences.failure:
                lines.append(differences.failure)
                return result(FAILED)
            ok, rel, compared = compare_with_differences(analytic, differences.numeric)
            kinks = f", {differences.kinks} kink coordinates skipped" if differences.kinks else ""
            verdict = "pass" if ok else "FAIL"
            lines.append(
                f"x of shape {shape}: {name}: {compared} coordinates against finite "
                f"differences, worst relative error {rel:.1e}{kinks}: {verdict}"
            )
            passed = passed and ok
            if name != "x̄ (dx)" and np.nan_to_num(differences.numeric).any():
                depends = True
        if not depends:
            lines.append("y does not depend on the parameters: a gate must learn something")
            passed = False
    return result(PASSED if passed else FAILED)


MY_GATE = Exercise(
    name="my_gate",
    title="Open exercise: design your own attention gate, forward and backward",
    points=3,
    notebook="ex08_design_your_own_gate",
    reading="07_cbam_end_to_end.ipynb §2",
    theory="docs/theory/gating.md",
    parts=(
        Part("my_gate_init", "my_gate_init(channels, seed) -> params", (), None, None),
        Part("my_gate_forward", "my_gate_forward(x, params) -> y", (), None, None),
        Part(
            "my_gate_backward", "my_gate_backward(dy, x, params) -> (dx, dparams)", (), None, None
        ),
    ),
    kind="open",
    open_check=check_open_gate,
)

EXERCISES = (MY_GATE,)
