"""``.ci/run`` tests both ends of the Python and NumPy range ``pyproject.toml`` promises, and
runs the README's Quick start as on a fresh machine."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = (REPO / "pyproject.toml").read_text()
CI = (REPO / ".ci" / "run").read_text()


def ci_setting(name: str) -> str:
    match = re.search(rf"^{name}=(\S+)", CI, flags=re.MULTILINE)
    assert match, f".ci/run sets no {name}"
    return match.group(1)


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_ci_tests_the_oldest_python_and_numpy_promised():
    python_floor = re.search(r'requires-python = ">=([\d.]+)"', PYPROJECT).group(1)
    numpy_floor = re.search(r'"numpy>=([\d.]+)"', PYPROJECT).group(1)
    assert ci_setting("OLDEST_PYTHON") == python_floor
    assert ci_setting("OLDEST_NUMPY") == numpy_floor
    assert 'test_range_end oldest "$OLDEST_PYTHON" "numpy==$OLDEST_NUMPY.*"' in CI


def test_ci_tests_the_newest_python_listed_with_the_newest_numpy():
    listed = re.findall(r'"Programming Language :: Python :: (3\.\d+)"', PYPROJECT)
    assert listed, "pyproject.toml lists no Python versions"
    assert min(listed, key=version) == ci_setting("OLDEST_PYTHON")
    assert max(listed, key=version) == ci_setting("NEWEST_PYTHON")
    assert 'test_range_end newest "$NEWEST_PYTHON" "numpy"' in CI


def test_ci_runs_the_quick_start_outside_any_virtual_environment():
    """pip refuses to install outside a virtual environment there, as on PEP 668 systems."""
    assert "PIP_REQUIRE_VIRTUALENV=1" in CI and "env -u VIRTUAL_ENV" in CI
    for index in (0, 1):
        assert f'outside_any_venv bash -euo pipefail -c "${{commands[{index}]}}"' in CI
