"""The spec's optional `compare` section and the `--keep`/`--scope-sets` strings: the keep
levels of a size curve and named sets of module globs to restrict pruning to.

Both forms go through the same checks, so a level or a set that `legoc compare` would refuse
on the command line is refused with the same words in a spec."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from legoc.errors import LegocError

SET_NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # set names go into file names and report headings


def keep_problem(levels: list[float]) -> str | None:
    """Why `levels` cannot be a curve's keep levels, or None."""
    if not levels:
        return "must list at least one keep level"
    for level in levels:
        if not 0 < level <= 1:
            return f"every level must be a fraction in (0, 1], got {level:g}"
    if len(set(levels)) != len(levels):
        return "levels must be distinct"
    return None


def scope_sets_problem(sets: dict[str, list[str]]) -> str | None:
    """Why `sets` cannot be scope sets, or None."""
    if not sets:
        return "must name at least one set"
    for name, globs in sets.items():
        if not SET_NAME.match(name):
            return f"set name {name!r}: use letters, digits, '-' and '_' only"
        if not globs or any(not g.strip() for g in globs):
            return f"set {name!r}: give at least one non-empty module glob"
    return None


class CompareSpec(BaseModel):
    """`compare:` settings used by `legoc compare` only (the command line overrides them)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    keep: list[float] | None = Field(
        None,
        description="Keep levels of the size curve, e.g. [0.8, 0.9, 0.95, 0.99] (default: the "
        "spec's keep only).",
    )
    scope_sets: dict[str, list[str]] | None = Field(
        None,
        description="Named sets of module globs; B and C also run with pruning restricted to "
        "each set, e.g. {early: ['layer.0*'], late: ['layer.5*']}.",
    )

    @field_validator("keep")
    @classmethod
    def _levels(cls, value: list[float] | None) -> list[float] | None:
        problem = None if value is None else keep_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("scope_sets")
    @classmethod
    def _sets(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        problem = None if value is None else scope_sets_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def parse_keep_levels(text: str) -> list[float]:
    """`0.8,0.9,0.95` -> [0.8, 0.9, 0.95]; errors name --keep."""
    try:
        levels = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise LegocError(
            f"--keep {text!r}: give comma-separated fractions, e.g. 0.8,0.9,0.95,0.99"
        ) from None
    problem = keep_problem(levels)
    if problem:
        raise LegocError(f"--keep {text!r}: {problem}")
    return levels


def parse_scope_sets(text: str) -> dict[str, list[str]]:
    """`early=layer.0*,layer.1*;late=layer.5*` -> {"early": [...], "late": [...]}."""
    sets: dict[str, list[str]] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, sep, globs = item.partition("=")
        if not sep:
            raise LegocError(
                f"--scope-sets {text!r}: write NAME=GLOB,GLOB;NAME=GLOB (item {item!r} has no '=')"
            )
        if name.strip() in sets:
            raise LegocError(f"--scope-sets {text!r}: set {name.strip()!r} is named twice")
        sets[name.strip()] = [g.strip() for g in globs.split(",")]
    problem = scope_sets_problem(sets)
    if problem:
        raise LegocError(f"--scope-sets {text!r}: {problem}")
    return sets
