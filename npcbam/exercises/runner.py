r"""How a student's function is called: fresh copies in, what came out (or how it failed).

The checker never calls a student's function directly. It asks a *runner* to call it on a
batch of argument tuples and gets back one :class:`Call` per tuple: the returned value,
normalised to arrays (:func:`normalise`), or the failure, with the warnings raised during the
call and the arguments the function modified in place. Two runners exist:

* :class:`LocalRunner`, for ``check(name, fn)`` in a notebook: calls ``fn`` in this process,
  each time on fresh copies of the arguments;
* the grader's subprocess runner (:mod:`npcbam.exercises.grade`): the same calls in a separate
  process per submission, with a time limit, so that a submission that loops, crashes or
  monkeypatches cannot touch the process that computes the reference.

Either way, the reference outputs are computed by the checker before and apart from the
student's code, from its own copies of the inputs.
"""

from __future__ import annotations

import copy
import linecache
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# How a call can fail, as shown in a report.
MISSING = "missing"  # no function of that name was defined
NOT_ATTEMPTED = "not attempted"  # it raised NotImplementedError
EXCEPTION = "exception"  # it raised anything else
TIMEOUT = "timeout"  # it did not return within the time limit
BAD_RETURN = "bad return"  # it returned something that is not arrays (a str, an object, ...)
FAILURES = (MISSING, NOT_ATTEMPTED, EXCEPTION, TIMEOUT, BAD_RETURN)


@dataclass(frozen=True)
class Foreign:
    """Stands for a returned value that is not numeric arrays: its type and a short repr."""

    type_name: str
    text: str


@dataclass(frozen=True)
class Call:
    """One call of a student's function.

    Attributes
    ----------
    returned : ndarray, tuple of (ndarray or Foreign), dict of str to ndarray, Foreign or None
        What the function returned, after :func:`normalise`; None when it failed.
    failure : str or None
        None if it returned, else one of ``FAILURES``.
    message : str
        For a failure, one or two lines: the exception (type and message) and the line of the
        student's code that raised it, e.g.
        ``"ValueError: operands could not be broadcast ... (line 7: dx = dy @ w)"``.
    warnings : tuple of str
        Every warning raised during the call (e.g. ``"RuntimeWarning: overflow encountered
        in exp"``), in order, without repeats.
    modified : tuple of int
        Positions (0-based) of the array arguments the function changed in place.
    """

    returned: object = None
    failure: str | None = None
    message: str = ""
    warnings: tuple[str, ...] = ()
    modified: tuple[int, ...] = ()


class Runner:
    """Calls a named function of a submission on a batch of argument tuples."""

    def run(self, function: str, arguments: Sequence[tuple]) -> list[Call]:
        """One :class:`Call` per tuple of ``arguments``, in order.

        Each argument is an ndarray, an int, a float, a tuple of ints, or a dict of str to
        ndarray. The function sees copies: the caller's arrays are never touched.
        """
        raise NotImplementedError


def normalise(value) -> object:
    """A returned value as the checker compares it.

    ndarrays are kept (a copy); Python and NumPy numbers become 0-d arrays; a tuple or list
    becomes a tuple of normalised items (nested tuples are kept nested); a dict of str keys
    becomes a dict of normalised values; None stays None; anything else (a str, an object, an
    object-dtype array, ...) becomes :class:`Foreign`.
    """
    if isinstance(value, np.ndarray):
        if value.dtype == object or value.dtype.kind not in "biufc":
            return Foreign(f"ndarray of dtype {value.dtype}", _short_repr(value))
        return np.array(value, copy=True)
    if isinstance(value, (bool, np.bool_, int, float, np.number)):
        return np.asarray(value)
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return tuple(normalise(item) for item in value)
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: normalise(item) for key, item in value.items()}
    return Foreign(type(value).__name__, _short_repr(value))


def _short_repr(value, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:  # a student's object whose __repr__ fails
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_exception(error: BaseException, filenames: Callable[[str], bool] | None = None) -> str:
    """``"Type: message (line L: source)"``, the line being the last frame of the traceback
    that belongs to the student's code (``filenames(frame.filename)`` true), else the last
    frame."""
    frames = traceback.extract_tb(error.__traceback__)
    chosen = None
    for frame in frames:
        if filenames is None or filenames(frame.filename):
            chosen = frame
    if chosen is None and frames:
        chosen = frames[-1]
    head = f"{type(error).__name__}: {error}".strip().rstrip(":")
    if len(head) > 300:
        head = head[:297] + "..."
    if chosen is None:
        return head
    line = (chosen.line or linecache.getline(chosen.filename, chosen.lineno)).strip()
    return f"{head} (line {chosen.lineno}: {line})" if line else f"{head} (line {chosen.lineno})"


def call_function(fn: Callable, args: tuple, filenames=None) -> Call:
    """Call ``fn(*copies of args)`` and describe the outcome as a :class:`Call`.

    The copies are compared with the originals afterwards to find arguments modified in place.
    Warnings are recorded (NumPy's floating-point warnings included: the call runs under
    ``np.errstate(all="warn", under="ignore")``), never raised.
    """
    copies = copy.deepcopy(args)
    # floating-point trouble warns (underflow to 0 is harmless and stays silent, as by default)
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="warn", under="ignore"):
        warnings.simplefilter("always")
        try:
            value = fn(*copies)
            failure, message = None, ""
        except NotImplementedError:
            value, failure, message = None, NOT_ATTEMPTED, ""
        except Exception as error:
            value, failure = None, EXCEPTION
            message = describe_exception(error, filenames)
    seen = []
    for item in caught:
        text = f"{item.category.__name__}: {item.message}"
        if text not in seen:
            seen.append(text)
    modified = tuple(i for i, (a, b) in enumerate(zip(args, copies)) if _changed(a, b))
    returned = None
    if failure is None:
        returned = normalise(value)
        if isinstance(returned, Foreign):
            failure, message = BAD_RETURN, f"returned a {returned.type_name}: {returned.text}"
    return Call(returned, failure, message, tuple(seen), modified)


def _changed(original, copied) -> bool:
    if isinstance(original, np.ndarray):
        return not (
            isinstance(copied, np.ndarray)
            and copied.shape == original.shape
            and copied.dtype == original.dtype
            and np.array_equal(copied, original, equal_nan=True)
        )
    if isinstance(original, dict):
        return any(_changed(original[k], copied.get(k)) for k in original) or (
            copied.keys() != original.keys()
        )
    return False


class LocalRunner(Runner):
    """Calls functions of this process (the notebook's), each call on fresh copies."""

    def __init__(self, functions: dict[str, Callable]):
        self.functions = dict(functions)

    def run(self, function: str, arguments: Sequence[tuple]) -> list[Call]:
        fn = self.functions.get(function)
        if fn is None:
            message = f"no function named {function}"
            return [Call(failure=MISSING, message=message) for _ in arguments]
        code_file = getattr(getattr(fn, "__code__", None), "co_filename", None)

        def is_student(filename: str) -> bool:
            return filename == code_file or "ipykernel" in filename or filename.startswith("<")

        return [call_function(fn, tuple(args), is_student) for args in arguments]
