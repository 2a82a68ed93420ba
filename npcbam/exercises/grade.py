"""``npcbam grade``: run submissions in their own processes and score every exercise."""

from __future__ import annotations


def add_commands(commands) -> None:
    """Register the ``grade`` subcommand on the CLI's subparsers."""
