"""Commands that use blocks without searching: run, compose, deploy, catalog, card."""

from __future__ import annotations

import typer


def register_runtime_commands(app: typer.Typer) -> None:
    """Add the block-side commands to the `legoc` app (kept apart from the compiler's)."""
