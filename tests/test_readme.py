"""The README's Python example runs as written, and its Quick start has exactly two commands."""

import re
import subprocess
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "the README has no Python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})


def test_quick_start_has_exactly_two_commands():
    """The lines .ci/run executes: install + gradcheck, then install test extras + pytest."""
    script = README.parent / ".ci" / "quickstart-commands"
    lines = subprocess.run(
        ["bash", str(script), str(README)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].endswith("pip install . && npcbam gradcheck")
    assert lines[1].endswith('pip install ".[test]" && python -m pytest')


def test_quick_start_commands_install_into_a_virtual_environment():
    """Each command works on its own on a fresh machine whose Python refuses `pip install`
    outside a virtual environment (PEP 668): it creates and activates one before any pip."""
    script = README.parent / ".ci" / "quickstart-commands"
    lines = subprocess.run(
        ["bash", str(script), str(README)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for line in lines:
        before_pip = line.split("pip install", 1)[0]
        assert re.fullmatch(r"python3 -m venv (\S+) && \. \1/bin/activate && ", before_pip), line
