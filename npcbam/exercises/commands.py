"""``npcbam exercises list`` and ``npcbam exercises start DIR [--solutions]``."""

from __future__ import annotations


def add_commands(commands) -> None:
    """Register the ``exercises`` subcommand on the CLI's subparsers."""
