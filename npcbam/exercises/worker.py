r"""The submission's process: load a student's code, then call its functions on request.

Started by the grader (:class:`npcbam.exercises.sandbox.SubprocessRunner`) as::

    python -m npcbam.exercises.worker SUBMISSION --timeout SECONDS [--skip 3,7]

with the requests on its standard input and the replies on its standard output. Before any
student code runs, the worker moves both to private file descriptors: descriptor 0 becomes
``/dev/null`` (``input()`` gets end of file) and descriptor 1 becomes a copy of descriptor 2, so
everything the submission prints, from Python or from C, goes to the standard error pipe that the
grader drains and caps. The messages (:mod:`npcbam.exercises.wire`) are:

========================================  ==========================================
worker → grader                           meaning
========================================  ==========================================
``{"unit": k, "label": "cell 3"}``        about to run unit ``k`` (or skip it)
``{"loaded": {"problems": [...]}}``       every unit ran; what went wrong in which
``{"unreadable": "..."}``                 the file is not a submission (then exits)
``{"index": i, "call": {...}}``           the outcome of argument tuple ``i``
========================================  ==========================================

and grader → worker ``{"function": name, "arguments": [...], "timeout": seconds}``.

Each unit (a notebook's code cell, a ``.py`` file's top-level statement) runs in its own
``try`` with a time limit (``SIGALRM`` where the platform has it), so a cell that raises, exits
or loops loses only itself. A unit that kills the process anyway (``os._exit``, a segfault, a
loop that swallows the alarm) is reported by the grader, which restarts the worker with that
unit in ``--skip``. After every unit and every call, the worker puts back any attribute the
student replaced in numpy, the standard library modules it relies on, and its own modules
(:class:`ModuleGuard`): a submission that patches ``np.array_equal`` or ``copy.deepcopy`` cannot
hide its in-place changes or garble its replies.
"""

from __future__ import annotations

import argparse
import builtins
import copy
import io
import json
import linecache
import os
import re
import signal
import struct
import sys
import time
import traceback
import types
import warnings
from contextlib import contextmanager

import numpy as np
import numpy.lib.format
import numpy.linalg

from npcbam.exercises import runner, submission, wire
from npcbam.exercises.runner import BAD_RETURN, EXCEPTION, MISSING, TIMEOUT, Call, call_function
from npcbam.exercises.submission import SubmissionError, Unit, read_units

# A returned array larger than this is not an answer to any exercise: it is not sent.
MAX_RETURN_BYTES = 1 << 26


class _TimeLimit(BaseException):
    """Raised in the student's code by the alarm (a BaseException, so ``except Exception`` in
    the student's code does not swallow it)."""


class ModuleGuard:
    """Remembers the attributes of some modules and puts back any that code replaced or deleted.

    Attributes added by the code are left alone (they can only be used by the code itself).
    """

    def __init__(self, modules: list[types.ModuleType]):
        self.saved = [(module, dict(vars(module))) for module in modules]

    def restore(self) -> None:
        for module, attributes in self.saved:
            current = vars(module)
            for name, value in attributes.items():
                if current.get(name, _ABSENT) is not value:
                    setattr(module, name, value)


_ABSENT = object()


@contextmanager
def time_limit(seconds: float):
    """Raise ``_TimeLimit`` in this (main) thread after ``seconds`` (a no-op without
    ``setitimer``, where the grader's own deadline is the only limit)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise _TimeLimit

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Worker:
    """One submission, loaded into one namespace, answering call requests."""

    def __init__(self, path: str, timeout: float, skip: set[int], requests, replies):
        self.path = os.path.abspath(path)
        self.timeout = timeout
        self.skip = skip
        self.requests = requests
        self.replies = replies
        self.failed_units: list[tuple[Unit, str]] = []  # (unit, what went wrong)
        name = "__main__" if path.endswith(".ipynb") else "submission"
        self.namespace: dict = {"__name__": name, "__builtins__": builtins}
        if name == "submission":  # a .py file knows where it is; a notebook cell does not
            self.namespace["__file__"] = self.path
        self.guard = ModuleGuard(
            [
                *(builtins, np, numpy.linalg, numpy.lib.format, copy, io, json, os, re, signal),
                *(struct, time, traceback, linecache, warnings, runner, submission, wire),
                sys.modules[__name__],
            ]
        )

    def is_student(self, filename: str) -> bool:
        """Whether a traceback frame belongs to the submission."""
        return filename == self.path or filename.startswith("<cell ")

    # --- loading --------------------------------------------------------------------------

    def load(self) -> bool:
        """Run every unit; False if the file is not a submission (reported, then exit)."""
        try:
            units = read_units(self.path)
        except SubmissionError as error:
            self.send({"unreadable": str(error)})
            return False
        for k, unit in enumerate(units):
            self.send({"unit": k, "label": unit.label})
            if k in self.skip:
                continue
            problem = self.run_unit(unit)
            if problem:
                self.failed_units.append((unit, problem))
        problems = [f"{unit.label}: {problem}" for unit, problem in self.failed_units]
        self.send({"loaded": {"problems": problems}})
        return True

    def run_unit(self, unit: Unit) -> str:
        """Run one unit in the namespace; what went wrong, or "" if nothing."""
        if unit.node is None:  # a cell: its lines for tracebacks, as IPython does
            lines = unit.source.splitlines(keepends=True)
            linecache.cache[unit.filename] = (len(unit.source), None, lines, unit.filename)
        try:
            code = unit.compile()
        except SyntaxError as error:
            return describe_syntax_error(error)
        try:
            with time_limit(self.timeout):
                exec(code, self.namespace)
        except _TimeLimit:
            return f"did not finish within {self.timeout:g} s (stopped)"
        except BaseException as error:  # SystemExit and KeyboardInterrupt too: one cell lost
            return runner.describe_exception(error, self.is_student)
        finally:
            self.guard.restore()
        return ""

    # --- calls ----------------------------------------------------------------------------

    def serve(self) -> None:
        """Answer requests until the grader closes the channel."""
        while True:
            try:
                header, arrays = wire.read_message(self.requests)
            except wire.ChannelClosed:
                return
            function = header["function"]
            arguments = [wire.decode_value(tree, arrays) for tree in header["arguments"]]
            deadline = time.monotonic() + float(header["timeout"])
            for i, args in enumerate(arguments):
                call = self.call(function, tuple(args), deadline, float(header["timeout"]))
                self.send_call(i, call)

    def call(self, name: str, args: tuple, deadline: float, timeout: float) -> Call:
        """Call the submission's function ``name`` on ``args`` before ``deadline``."""
        fn = self.namespace.get(name)
        if fn is None:
            return Call(failure=MISSING, message=self.missing_message(name))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Call(failure=TIMEOUT, message=f"not run: {name}'s {timeout:g} s were used up")

        def guarded(*copies):
            try:
                with time_limit(remaining):
                    return fn(*copies)
            finally:
                self.guard.restore()

        try:
            call = call_function(guarded, args, self.is_student)
        except _TimeLimit:
            return Call(failure=TIMEOUT, message=f"{name} did not return within {timeout:g} s")
        except BaseException as error:  # sys.exit() in the function, a RecursionError, ...
            self.guard.restore()
            return Call(
                failure=EXCEPTION, message=runner.describe_exception(error, self.is_student)
            )
        return too_large_to_send(call)

    def missing_message(self, name: str) -> str:
        """ "no function named f", with the unit that should have defined it, if one failed."""
        defines = re.compile(rf"^\s*def\s+{re.escape(name)}\s*\(", re.MULTILINE)
        for unit, problem in self.failed_units:
            text = unit.source if unit.node is None else ast_source(unit)
            if defines.search(text):
                return (
                    f"no function named {name}: {unit.label}, which defines it, failed: {problem}"
                )
        return f"no function named {name}"

    # --- sending --------------------------------------------------------------------------

    def send(self, header: dict, arrays: list[np.ndarray] | None = None) -> None:
        self.replies.write(wire.pack(header, arrays or []))
        self.replies.flush()

    def send_call(self, index: int, call: Call) -> None:
        arrays: list[np.ndarray] = []
        try:
            tree = wire.encode_call(call, arrays)
        except (TypeError, ValueError) as error:  # cannot happen for normalised values
            arrays = []
            tree = wire.encode_call(Call(failure=BAD_RETURN, message=str(error)), arrays)
        self.send({"index": index, "call": tree}, arrays)


def ast_source(unit: Unit) -> str:
    """The lines of a ``.py`` unit's statement."""
    statement = unit.node.body[0]
    lines = unit.source.splitlines()
    return "\n".join(lines[statement.lineno - 1 : (statement.end_lineno or statement.lineno)])


def describe_syntax_error(error: SyntaxError) -> str:
    line = (error.text or "").strip()
    where = f"line {error.lineno}: {line}" if line else f"line {error.lineno}"
    return f"{type(error).__name__}: {error.msg} ({where})"


def too_large_to_send(call: Call) -> Call:
    """``call``, or a bad return if it returned an array too large to be an answer."""
    values = call.returned
    if isinstance(values, dict):
        values = tuple(values.values())
    elif not isinstance(values, tuple):
        values = (values,)
    for value in values:
        if isinstance(value, np.ndarray) and value.nbytes > MAX_RETURN_BYTES:
            message = f"returned an array of shape {value.shape} ({value.nbytes} bytes): too large"
            return Call(failure=BAD_RETURN, message=message, warnings=call.warnings)
    return call


def private_channels():
    """Move the protocol off descriptors 0 and 1; leave 0 = /dev/null and 1 = 2 for the
    student's ``input()`` and prints. Returns the (requests, replies) binary files."""
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    sys.stdout.flush()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return requests, replies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m npcbam.exercises.worker")
    parser.add_argument("submission")
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--skip", default="", help="comma-separated units not to run")
    args = parser.parse_args(argv)
    skip = {int(k) for k in args.skip.split(",") if k}
    requests, replies = private_channels()
    worker = Worker(args.submission, args.timeout, skip, requests, replies)
    try:
        if worker.load():
            worker.serve()
    except BrokenPipeError:  # the grader is gone
        pass
    return 0


if __name__ == "__main__":
    # os._exit: the submission's threads and atexit handlers must not keep the process alive
    sys.stdout.flush()
    os._exit(main())
