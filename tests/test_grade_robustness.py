"""Bad submissions lose only the exercises they break, with a clear message; the grader never
crashes (issue 11, item 5 and acceptance 4).

Each kind of bad submission is written here, as a ``.py`` file or a notebook, and graded on a
tiny registry (``grading_support.TINY``: double, relu, square) in a real worker process.
"""

from __future__ import annotations

import numpy as np
import pytest
from grading_support import CORRECT, TINY, tiny_evaluate, write_notebook, write_py

from npcbam.exercises.grade import format_submission, grade_submission
from npcbam.exercises.runner import BAD_RETURN, EXCEPTION, TIMEOUT
from npcbam.exercises.sandbox import OUTPUT_CAP, SubprocessRunner

LIMIT = 1.0  # seconds: each test's loops are stopped after this (and killed 2 s later)

DOUBLE = "def double(x):\n    return 2 * x\n"
RELU = "def relu_backward(dh, p):\n    return dh * (p > 0)\n"
SQUARE = "def square(x):\n    return x * x\n"


def grade(path, timeout=10.0):
    return grade_submission(
        path, list(TINY), timeout=timeout, exercises=TINY, evaluate=tiny_evaluate
    )


def statuses(graded) -> dict[str, str]:
    return {g.name: g.status for g in graded.grades}


def report(graded, name: str) -> str:
    return next(g.report for g in graded.grades if g.name == name)


def test_a_correct_submission_gets_full_marks(tmp_path):
    for path in (
        write_py(tmp_path, "solutions.py", CORRECT),
        write_notebook(tmp_path, "solutions.ipynb", [DOUBLE, RELU, "%time 1 + 1\n" + SQUARE]),
    ):
        graded = grade(path)
        assert statuses(graded) == {"double": "passed", "relu": "passed", "square": "passed"}
        assert (graded.score, graded.points) == (6, 6)
        assert graded.problems == [] and graded.unloadable is None


def test_a_cell_that_raises_loses_only_the_functions_it_defines(tmp_path):
    path = write_notebook(
        tmp_path,
        "raises.ipynb",
        [
            DOUBLE,
            "1 / 0",
            RELU,
            "import numpy as np\nx = np.ones(3)\nraise RuntimeError('bad')\n" + SQUARE,
        ],
    )
    graded = grade(path)
    assert statuses(graded) == {"double": "passed", "relu": "passed", "square": "missing"}
    assert graded.problems == [
        "cell 2: ZeroDivisionError: division by zero (line 1: 1 / 0)",
        "cell 4: RuntimeError: bad (line 3: raise RuntimeError('bad'))",
    ]
    # the missing function's message names the cell that should have defined it
    assert "cell 4, which defines it, failed: RuntimeError: bad" in report(graded, "square")
    text = format_submission(graded)
    assert "While loading the submission:" in text and "cell 2: ZeroDivisionError" in text


def test_a_py_file_that_raises_at_import_keeps_its_other_statements(tmp_path):
    path = write_py(tmp_path, "raises.py", DOUBLE + "raise ValueError('at import')\n" + SQUARE)
    graded = grade(path)
    assert statuses(graded) == {"double": "passed", "relu": "missing", "square": "passed"}
    assert graded.problems == [
        "line 3: ValueError: at import (line 3: raise ValueError('at import'))"
    ]


def test_a_missing_module_at_cell_level_and_in_a_function(tmp_path):
    path = write_notebook(
        tmp_path,
        "imports.ipynb",
        [
            DOUBLE,
            "import not_a_module_npcbam\n" + RELU,
            "def square(x):\n    import another_missing_module\n    return x * x\n",
        ],
    )
    graded = grade(path)
    assert statuses(graded) == {"double": "passed", "relu": "missing", "square": "failed"}
    assert "ModuleNotFoundError: No module named 'not_a_module_npcbam'" in report(graded, "relu")
    assert "ModuleNotFoundError: No module named 'another_missing_module'" in report(
        graded, "square"
    )
    assert "(line 2: import another_missing_module)" in report(graded, "square")


def test_a_syntax_error_in_a_cell_loses_that_cell(tmp_path):
    path = write_notebook(
        tmp_path, "syntax.ipynb", [DOUBLE, RELU, "def square(x)\n    return x * x\n"]
    )
    graded = grade(path)
    assert statuses(graded) == {"double": "passed", "relu": "passed", "square": "missing"}
    assert "SyntaxError" in report(graded, "square") and "def square(x)" in report(graded, "square")


def test_a_py_file_with_a_syntax_error_cannot_load_and_says_where(tmp_path):
    path = write_py(tmp_path, "syntax.py", DOUBLE + "def square(x)\n    return x * x\n")
    graded = grade(path)
    assert statuses(graded) == {"double": "missing", "relu": "missing", "square": "missing"}
    assert graded.unloadable.startswith("SyntaxError")
    assert "line 3: def square(x)" in graded.unloadable
    assert graded.score == 0
    assert "The submission could not be loaded: SyntaxError" in format_submission(graded)


def test_a_notebook_that_is_not_json_cannot_load(tmp_path):
    path = tmp_path / "broken.ipynb"
    path.write_text("{ this is not json", encoding="utf-8")
    graded = grade(path)
    assert set(statuses(graded).values()) == {"missing"}
    assert "not valid JSON" in graded.unloadable


def test_a_cell_that_loops_forever_is_stopped_and_the_rest_loads(tmp_path):
    path = write_notebook(tmp_path, "loops.ipynb", [DOUBLE, "while True:\n    pass", RELU, SQUARE])
    graded = grade(path, timeout=LIMIT)
    assert statuses(graded) == {"double": "passed", "relu": "passed", "square": "passed"}
    assert graded.problems == [f"cell 2: did not finish within {LIMIT:g} s (stopped)"]


def test_a_cell_that_swallows_the_alarm_is_killed_then_skipped(tmp_path):
    stubborn = (
        "while True:\n    try:\n        while True:\n            pass\n"
        "    except BaseException:\n        pass"
    )
    path = write_notebook(tmp_path, "stubborn.ipynb", [DOUBLE, stubborn, RELU, SQUARE])
    with SubprocessRunner(path, timeout=LIMIT) as runner:
        calls = runner.run("square", [(np.arange(3.0),)])
        assert calls[0].failure is None and calls[0].returned.tolist() == [0.0, 1.0, 4.0]
        assert runner.problems == [f"cell 2: did not finish within {LIMIT:g} s"]
        assert runner.starts == 2  # the first process killed, the second skipped cell 2


def test_a_function_that_loops_forever_times_out_and_the_next_exercise_is_graded(tmp_path):
    path = write_py(
        tmp_path, "loops.py", DOUBLE + RELU + "def square(x):\n    while True:\n        pass\n"
    )
    graded = grade(path, timeout=LIMIT)
    assert statuses(graded) == {"double": "passed", "relu": "passed", "square": "failed"}
    assert f"timeout: square did not return within {LIMIT:g} s" in report(graded, "square")


def test_a_function_that_swallows_the_alarm_is_killed_and_the_process_restarted(tmp_path):
    stubborn = (
        "def double(x):\n    while True:\n        try:\n            while True:\n"
        "                pass\n        except BaseException:\n            pass\n"
    )
    path = write_py(tmp_path, "stubborn.py", stubborn + RELU + SQUARE)
    with SubprocessRunner(path, timeout=LIMIT) as runner:
        x = np.ones(2)
        lost = runner.run("double", [(x,), (x,)])
        assert [call.failure for call in lost] == [TIMEOUT, TIMEOUT]
        assert lost[0].message == f"double did not return within {LIMIT:g} s"
        assert lost[1].message.startswith("not run: ")
        after = runner.run("square", [(np.array([3.0]),)])
        assert after[0].failure is None and after[0].returned.tolist() == [9.0]
        assert runner.starts == 2


def test_printing_megabytes_neither_blocks_nor_floods(tmp_path):
    path = write_notebook(
        tmp_path,
        "chatty.ipynb",
        [
            "print('x' * 5_000_000)\nimport os\nos.write(1, b'y' * 1_000_000)",
            "def double(x):\n    print('z' * 1_000_000)\n    return 2 * x\n",
            RELU,
            SQUARE,
        ],
    )
    graded = grade(path)
    assert statuses(graded) == {"double": "passed", "relu": "passed", "square": "passed"}
    with SubprocessRunner(path, timeout=10) as runner:
        assert runner.run("double", [(np.ones(2),)] * 3)[2].returned.tolist() == [2.0, 2.0]
        assert runner.output.startswith("x" * 1000)
    assert len(runner.output) == OUTPUT_CAP


def test_garbage_returns_fail_with_what_was_returned(tmp_path):
    path = write_py(
        tmp_path,
        "garbage.py",
        """
        import numpy as np
        def double(x):
            return "twice x"
        def relu_backward(dh, p):
            return None
        def square(x):
            return (x * x)[:1]
        """,
    )
    graded = grade(path)
    assert statuses(graded) == {"double": "failed", "relu": "failed", "square": "failed"}
    assert "bad return: returned a str: 'twice x'" in report(graded, "double")


def test_garbage_of_every_kind_travels_back_as_what_it_is(tmp_path):
    path = write_py(
        tmp_path,
        "garbage.py",
        """
        import numpy as np
        def string(x):
            return "x"
        def nothing(x):
            return None
        def objects(x):
            return np.array([object(), 1], dtype=object)
        def mixed(x):
            return (x, "a", {"w": x * 2}, (1, 2.5))
        def generator(x):
            return (v for v in x)
        def huge(x):
            return np.zeros(2**24 + 1)
        def cyclic(x):
            a = []
            a.append(a)
            return a
        """,
    )
    x = np.array([1.0, 2.0])
    with SubprocessRunner(path, timeout=10) as runner:
        (string,) = runner.run("string", [(x,)])
        assert string.failure == BAD_RETURN and string.message == "returned a str: 'x'"
        (nothing,) = runner.run("nothing", [(x,)])
        assert nothing.failure is None and nothing.returned is None
        (objects,) = runner.run("objects", [(x,)])
        assert objects.failure == BAD_RETURN and "dtype object" in objects.message
        (mixed,) = runner.run("mixed", [(x,)])
        assert mixed.failure is None
        array, text, params, numbers = mixed.returned
        assert array.tolist() == [1.0, 2.0] and text.type_name == "str"
        assert params["w"].tolist() == [2.0, 4.0]
        assert numbers[0].dtype.kind == "i" and numbers[1].tolist() == 2.5
        (generator,) = runner.run("generator", [(x,)])
        assert generator.failure == BAD_RETURN and "generator" in generator.message
        (huge,) = runner.run("huge", [(x,)])
        assert huge.failure == BAD_RETURN and "too large" in huge.message
        (cyclic,) = runner.run("cyclic", [(x,)])
        assert cyclic.failure == EXCEPTION and "RecursionError" in cyclic.message
        assert runner.starts == 1  # none of this needed a new process


def test_exits_and_crashes_lose_only_their_cell_or_exercise(tmp_path):
    path = write_notebook(
        tmp_path,
        "exits.ipynb",
        [
            "import sys\nsys.exit('leaving')",
            DOUBLE,
            "import os\nos._exit(4)",
            "import sys\ndef relu_backward(dh, p):\n    sys.exit(3)\n",
            SQUARE,
        ],
    )
    graded = grade(path)
    assert statuses(graded) == {"double": "passed", "relu": "failed", "square": "passed"}
    assert graded.problems[0] == "cell 3: ended the process (exit status 4)"
    assert graded.problems[1].startswith("cell 1: SystemExit: leaving")
    assert "SystemExit: 3" in report(graded, "relu")


@pytest.mark.parametrize(
    ("body", "ending"),
    [
        ("import os\n    os._exit(3)", "exit status 3"),
        ("import ctypes\n    ctypes.string_at(0)", "killed by signal SIGSEGV"),
    ],
)
def test_a_function_that_ends_its_process_fails_and_the_next_exercise_is_graded(
    tmp_path, body, ending
):
    path = write_py(
        tmp_path, "ends.py", DOUBLE + f"def relu_backward(dh, p):\n    {body}\n" + SQUARE
    )
    graded = grade(path)
    assert statuses(graded) == {"double": "passed", "relu": "failed", "square": "passed"}
    assert f"the submission's process ended ({ending}) while running relu_backward" in report(
        graded, "relu"
    )


def test_memory_error_and_input_are_ordinary_failures(tmp_path):
    path = write_notebook(
        tmp_path,
        "memory.ipynb",
        [
            "name = input('your name: ')",
            "def double(x):\n    raise MemoryError('out of memory')\n",
            RELU,
            SQUARE,
        ],
    )
    graded = grade(path)
    assert statuses(graded) == {"double": "failed", "relu": "passed", "square": "passed"}
    assert graded.problems[0].startswith("cell 1: EOFError")
    assert "MemoryError: out of memory" in report(graded, "double")


def test_inputs_modified_in_place_are_reported_and_ours_stay_untouched(tmp_path):
    path = write_py(
        tmp_path,
        "inplace.py",
        """
        import numpy as np
        np.array_equal = lambda *args, **kwargs: True  # would hide the change from a naive check
        def double(x):
            x *= 2
            return x
        """,
    )
    x = np.array([1.0, -2.0])
    with SubprocessRunner(path, timeout=10) as runner:
        (call,) = runner.run("double", [(x,)])
    assert call.modified == (0,) and call.returned.tolist() == [2.0, -4.0]
    assert x.tolist() == [1.0, -2.0]
    graded = grade(path)
    assert statuses(graded)["double"] == "failed"
    assert "modified argument(s) (0,) in place" in report(graded, "double")


def test_monkeypatching_numpy_or_npcbam_cannot_pass_a_wrong_answer(tmp_path):
    path = write_notebook(
        tmp_path,
        "patches.ipynb",
        [
            "import numpy as np\nimport npcbam.ops\n"
            "np.allclose = lambda *a, **k: True\nnp.isclose = lambda *a, **k: True\n"
            "np.array_equal = lambda *a, **k: True\n"
            "np.testing.assert_allclose = lambda *a, **k: None\n"
            "npcbam.ops.relu_backward = lambda *a, **k: None",
            "def double(x):\n    return 3 * x  # wrong\n",
            "import builtins\nbuiltins.isinstance = lambda *a: True\nbuiltins.len = lambda *a: 0\n"
            + SQUARE,
        ],
    )
    graded = grade(path)
    assert statuses(graded) == {"double": "failed", "relu": "missing", "square": "passed"}
    assert np.allclose(np.zeros(1), np.ones(1)) is False  # this process untouched, of course


def test_writing_on_the_standard_descriptors_does_not_reach_the_channel(tmp_path):
    path = write_py(
        tmp_path,
        "descriptors.py",
        """
        import os, sys
        os.write(1, b"\\x00\\x00\\x00\\x05garbage")
        sys.stdout.buffer.write(b"\\xff" * 100)
        sys.stdout.flush()
        def double(x):
            os.write(1, b"\\x00\\x00\\x00\\x01")
            sys.stdout.write("more")
            return 2 * x
        """,
    )
    graded = grade(path)
    assert statuses(graded)["double"] == "passed", (report(graded, "double"), graded)


FORGE = """
import gc
from npcbam.exercises import wire
def forge(header):
    (worker,) = [o for o in gc.get_objects() if type(o).__name__ == "Worker"]
    worker.replies.write(wire.pack(header, []))
    worker.replies.flush()
"""


def test_forged_messages_on_the_private_channel_stop_the_process_not_the_grader(tmp_path):
    path = write_notebook(
        tmp_path,
        "forges.ipynb",
        [
            FORGE,
            DOUBLE,
            "forge({'loaded': {'problems': 5}})",
            "def relu_backward(dh, p):\n    forge({'index': 'zero', 'call': None})\n",
            SQUARE,
        ],
    )
    graded = grade(path)
    assert statuses(graded) == {"double": "passed", "relu": "failed", "square": "passed"}
    assert graded.problems[0] == "cell 3: broke the grader's protocol (stopped)"
    assert "the submission's process broke the protocol" in report(graded, "relu")
