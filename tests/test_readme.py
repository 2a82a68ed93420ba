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
    assert lines[0].startswith("pip install .") and lines[0].endswith("npcbam gradcheck")
    assert '".[test]"' in lines[1] and lines[1].endswith("pytest")
