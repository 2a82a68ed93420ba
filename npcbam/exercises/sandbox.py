r"""The grader's runner: a submission's functions called in a process of their own.

:class:`SubprocessRunner` starts one worker process per submission
(``python -m npcbam.exercises.worker``, see :mod:`npcbam.exercises.worker` for what it does),
in a fresh temporary directory, with ``NPCBAM_GRADING=1`` (so the notebook's own ``check(...)``
cells do nothing), ``MPLBACKEND=Agg`` and one BLAS thread (unless set otherwise). It sends
each batch of argument tuples over a pipe (:mod:`npcbam.exercises.wire`: JSON and ``.npy``,
never pickle) and reads one :class:`~npcbam.exercises.runner.Call` per tuple.

Time limits are kept twice: inside the worker by an alarm (a looping cell or call is stopped and
the worker carries on), and here by a deadline (``timeout`` plus a grace period) after which the
whole process group is killed. What happens when the process is lost:

* while **loading**, the unit (cell or statement) it was running is skipped on the next start,
  and the loss is recorded in ``SubprocessRunner.problems``; after
  ``MAX_LOAD_RESTARTS`` such restarts the submission counts as unloadable;
* during a **batch of calls**, the call it was running becomes a ``timeout`` (deadline) or an
  ``exception`` ("the submission's process ended ..."), the calls after it are not run, and
  the next batch starts a fresh process (the submission loaded again).

The submission's output (fd 1 and 2 of the worker) is drained continuously so that printing
megabytes cannot block it, and only its first ``OUTPUT_CAP`` characters are kept
(``SubprocessRunner.output``).
"""

from __future__ import annotations

import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from npcbam.exercises import wire
from npcbam.exercises.runner import EXCEPTION, MISSING, TIMEOUT, Call, Runner

DEFAULT_TIMEOUT = 60.0
GRACE = 2.0  # seconds past the worker's own limit before it is killed
STARTUP = 60.0  # seconds for the interpreter to start and import numpy and npcbam
MAX_LOAD_RESTARTS = 5
OUTPUT_CAP = 20_000
# Exercise-sized arrays gain nothing from BLAS threads, and idle ones spinning next to the
# grader's own process slow both down on a small machine.
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class SubprocessRunner(Runner):
    """Call a submission's functions in a separate process, with time limits.

    Parameters
    ----------
    path : str or Path
        The submission: a ``.ipynb`` notebook or a ``.py`` file.
    timeout : float
        Seconds allowed for each unit while loading, and for each batch of calls
        (one :meth:`run`).

    Attributes
    ----------
    problems : list of str
        What went wrong while loading, e.g. ``"cell 4: NameError: name 'np' is not defined
        (line 2: x = np.ones(3))"``, in order of the units.
    unloadable : str or None
        Why nothing of the submission could be loaded (a notebook that is not JSON, a ``.py``
        file with a syntax error, a process that could not start), or None.
    output : str
        The start of what the submission printed (at most ``OUTPUT_CAP`` characters, over
        every start of its process).
    starts : int
        How many processes were started.

    Use as a context manager (or call :meth:`close`) so the process and its directory go away.
    """

    def __init__(self, path: str | Path, timeout: float = DEFAULT_TIMEOUT):
        if not 0 < timeout < math.inf:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
        self.path = Path(path).resolve()
        self.timeout = float(timeout)
        self.skipped: dict[int, str] = {}  # unit index -> why it is not run any more
        self.problems: list[str] = []
        self.unloadable: str | None = None
        self.output = ""
        self.starts = 0
        self._process: subprocess.Popen | None = None
        self._ready = False  # the process has loaded the submission and waits for requests
        self._messages: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._directory: str | None = None
        self._output_lock = threading.Lock()

    def __enter__(self) -> SubprocessRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the Runner interface -------------------------------------------------------------

    def run(self, function: str, arguments: Sequence[tuple]) -> list[Call]:
        """One :class:`Call` per tuple of ``arguments``, computed in the submission's process."""
        arguments = [tuple(args) for args in arguments]
        if not arguments:
            return []
        if not self._loaded():
            message = f"no function named {function}: {self.unloadable}"
            return [Call(failure=MISSING, message=message) for _ in arguments]
        values: list = []
        trees = [wire.encode_value(args, values) for args in arguments]
        request = wire.pack(
            {"function": function, "arguments": trees, "timeout": self.timeout}, values
        )
        self._send(request)
        calls: list[Call | None] = [None] * len(arguments)
        deadline = time.monotonic() + self.timeout + GRACE
        while None in calls:
            kind, content = self._receive(deadline)
            if kind == "message" and set(content[0]) == {"index", "call"}:
                header, arrays = content
                index = header["index"]
                if type(index) is int and 0 <= index < len(calls) and calls[index] is None:
                    try:
                        calls[index] = wire.decode_call(header["call"], arrays)
                        continue
                    except wire.ProtocolError as error:
                        kind, content = "broken", str(error)
                else:
                    kind, content = "broken", f"a reply to call {index!r}"
            lost = self._lost_call(function, kind, content)
            pending = [i for i, call in enumerate(calls) if call is None]
            calls[pending[0]] = lost
            for i in pending[1:]:
                calls[i] = Call(failure=lost.failure, message=f"not run: {lost.message}")
        return calls

    def _lost_call(self, function: str, kind: str, content) -> Call:
        """The call that was running when the process stopped answering (then stop it)."""
        if kind == "deadline":
            self._stop()
            return Call(
                failure=TIMEOUT, message=f"{function} did not return within {self.timeout:g} s"
            )
        if kind == "closed":
            status = self._stop()
            message = (
                f"the submission's process ended ({status}) while running {function}: "
                "an exit, a crash or running out of memory"
            )
            return Call(failure=EXCEPTION, message=message)
        self._stop()
        detail = content if isinstance(content, str) else "an unexpected message"
        return Call(
            failure=EXCEPTION, message=f"the submission's process broke the protocol ({detail})"
        )

    # --- loading --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the process now, so that the submission loads while this process does
        something else (:meth:`run` waits for the loading to end)."""
        if self._process is None and self.unloadable is None:
            self._start()

    def _loaded(self) -> bool:
        """Make sure a process with the submission loaded is running; False if impossible."""
        while self.unloadable is None and not self._ready:
            if len(self.skipped) > MAX_LOAD_RESTARTS:
                lost = [self.skipped[k] for k in sorted(self.skipped)]
                self.unloadable = "its process was lost while loading: " + "; ".join(lost)
                break
            self.start()
            self._load()
        return self.unloadable is None

    def _load(self) -> None:
        """Follow the worker's loading; on a lost process, skip the unit it was running."""
        unit, label = -1, None
        deadline = time.monotonic() + STARTUP
        while True:
            kind, content = self._receive(deadline)
            event, value = _loading_event(kind, content)
            if event == "unit" and value[0] > unit:  # units only go forward
                unit, label = value
                deadline = time.monotonic() + self.timeout + GRACE
            elif event == "loaded":
                skipped = [self.skipped[k] for k in sorted(self.skipped)]
                self.problems = skipped + value
                self._ready = True
                return
            elif event == "unreadable":
                self.unloadable = value
                self._stop()
                return
            else:
                status = self._stop()
                if unit < 0:  # it never started loading: the grader's environment
                    self.unloadable = (
                        f"the grading process did not start ({status}): "
                        + (self.output.strip().splitlines() or ["no output"])[-1]
                    )
                elif kind == "deadline":
                    self.skipped[unit] = f"{label}: did not finish within {self.timeout:g} s"
                elif kind == "closed":
                    self.skipped[unit] = f"{label}: ended the process ({status})"
                else:
                    self.skipped[unit] = f"{label}: broke the grader's protocol (stopped)"
                return

    # --- the process ----------------------------------------------------------------------

    def _start(self) -> None:
        self.starts += 1
        if self._directory is None:
            self._directory = tempfile.mkdtemp(prefix="npcbam-grade-")
        env = dict(os.environ, NPCBAM_GRADING="1", MPLBACKEND="Agg", PYTHONIOENCODING="utf-8")
        for name in BLAS_THREADS:  # one BLAS thread, unless the teacher asked otherwise
            env.setdefault(name, "1")
        command = [sys.executable, "-m", "npcbam.exercises.worker", str(self.path)]
        command += ["--timeout", repr(self.timeout)]
        command += ["--skip", ",".join(str(k) for k in sorted(self.skipped))]
        self._messages = queue.Queue()
        self._process = subprocess.Popen(
            command,
            cwd=self._directory,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=os.name == "posix",  # its own process group, killed as one
        )
        self._threads = [
            threading.Thread(target=self._read, args=(self._process, self._messages), daemon=True),
            threading.Thread(target=self._drain, args=(self._process.stderr,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _read(process: subprocess.Popen, messages: queue.Queue) -> None:
        """Reader thread: every message of the worker into ``messages``, then how it ended."""
        while True:
            try:
                messages.put(("message", wire.read_message(process.stdout)))
            except wire.ChannelClosed:
                messages.put(("closed", None))
                return
            except (wire.ProtocolError, OSError, ValueError) as error:
                messages.put(("broken", str(error)))
                return

    def _drain(self, stream) -> None:
        """Output thread: read the submission's output to the end, keep its beginning."""
        while True:
            chunk = stream.read1(1 << 16) if hasattr(stream, "read1") else stream.read(1 << 16)
            if not chunk:
                return
            with self._output_lock:
                if len(self.output) < OUTPUT_CAP:
                    text = chunk.decode("utf-8", errors="replace")
                    self.output = (self.output + text)[:OUTPUT_CAP]

    def _send(self, request: bytes) -> None:
        """Write a request from a thread (the pipe may be full while the worker is busy)."""
        stdin = self._process.stdin

        def write():
            try:
                stdin.write(request)
                stdin.flush()
            except (OSError, ValueError):  # the process is gone: the reader reports it
                pass

        threading.Thread(target=write, daemon=True).start()

    def _receive(self, deadline: float) -> tuple[str, object]:
        """The next event from the reader thread, or ("deadline", None)."""
        try:
            return self._messages.get(timeout=max(deadline - time.monotonic(), 0))
        except queue.Empty:
            return "deadline", None

    def _stop(self) -> str:
        """Kill the process group and reap the process; how it ended.

        The group is killed *before* the process is reaped (nothing else here waits for it),
        so its id cannot have been reused; a process that already ended keeps its exit status.
        """
        process, self._process = self._process, None
        self._ready = False
        if process is None:
            return "not running"
        _kill(process)
        process.wait()
        for stream in (process.stdin, process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=5)
        process.stderr.close()
        return describe_status(process.returncode)

    def close(self) -> None:
        """End the worker (closing its requests first, so it can exit by itself) and remove
        its directory."""
        if self._process is not None:
            try:
                self._process.stdin.close()
            except OSError:
                pass
            deadline = time.monotonic() + 2
            while self._receive(deadline)[0] == "message":
                pass
            self._stop()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None


def _loading_event(kind: str, content) -> tuple[str, object]:
    """What a message received while loading says, checked field by field: ("unit", (k,
    label)), ("loaded", problems), ("unreadable", why), or ("lost", None) for anything else."""
    header = content[0] if kind == "message" else None
    if not isinstance(header, dict) or len(header) not in (1, 2):
        return "lost", None
    if set(header) == {"unit", "label"}:
        k, label = header["unit"], header["label"]
        if type(k) is int and isinstance(label, str):
            return "unit", (k, label)
    elif set(header) == {"loaded"} and isinstance(header["loaded"], dict):
        problems = header["loaded"].get("problems")
        if isinstance(problems, list) and all(isinstance(p, str) for p in problems):
            return "loaded", problems
    elif set(header) == {"unreadable"} and isinstance(header["unreadable"], str):
        return "unreadable", header["unreadable"]
    return "lost", None


def _kill(process: subprocess.Popen) -> None:
    """Kill the worker and anything it started (its process group on POSIX)."""
    try:
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except (ProcessLookupError, PermissionError):
        pass


def describe_status(returncode: int | None) -> str:
    """``"exit status 3"`` or ``"killed by signal SIGSEGV"``."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"
