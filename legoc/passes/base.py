"""The pass contract: `Pass`, what it returns (`PassResult`), the services it runs with
(`PassContext`), and `Pipeline`, an ordered list of passes parsed from and printed as a string.

A pass is a frozen dataclass whose fields are its options only, with a kebab-case `name` and a
`kind`: *search* passes change only the kept set (and leave the scorer as they found it),
*rewrite* passes restructure the graph (exact against the masked model, idempotent), *train*
passes change weights only. Services - the scorer, the one budget of the pipeline, progress,
the memo of scored candidates, the verdicts on kept sets - travel in the `PassContext`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from legoc.errors import LegocError
from legoc.ir.core import IR

if TYPE_CHECKING:
    import numpy as np

    from legoc.scoring.budget import Budget
    from legoc.scoring.scorer import Scorer

# (phase, done, total): a search pass reports its name with the budget used; mask training
# reports "mask training" with gradient steps taken of those planned
Progress = Callable[[str, int, int], None]
KINDS = ("search", "rewrite", "train")


@dataclass
class PassResult:
    """The IR a pass returns; `stats` counts what this run changed (and what it spent);
    `changed` is set by the pass; a search pass's candidates are in `trace`."""

    ir: IR
    stats: dict[str, int | float] = field(default_factory=dict)
    changed: bool = False
    trace: list[dict] = field(default_factory=list)


@dataclass
class Verdict:
    """What is known of one kept set: its faithfulness (exact when `exact`) and whether it is
    proven 1-minimal at the context's keep."""

    faithfulness: float | None = None
    one_minimal: bool = False
    exact: bool = False


@dataclass
class PassContext:
    """The services a pass runs with (never its options).

    `keep` and `seed` are the task's; `memo` holds the candidates one pass (and the passes it
    runs inside itself) scored; `verdicts` what the pipeline's passes proved about kept sets,
    so a later pass with nothing to do returns unchanged; `after` is called with every pass's
    name and IR (--print-ir-after); `source_sizes` are the source model's unit counts per
    prunable module (align-channels never widens a layer past them)."""

    scorer: Scorer | None = None
    budget: Budget | None = None
    keep: float = 1.0
    seed: int = 0
    progress: Progress | None = None
    memo: dict = field(default_factory=dict)
    verdicts: dict[bytes, Verdict] = field(default_factory=dict)
    source_sizes: dict[str, int] | None = None
    after: Callable[[str, IR], None] | None = None

    def for_pass(self) -> PassContext:
        """The context of one pass of a pipeline: its own memo, everything else shared."""
        return dataclasses.replace(self, memo={})

    def verdict(self, kept: dict[str, np.ndarray]) -> Verdict:
        return self.verdicts.get(mask_key(kept), Verdict())

    def note(self, kept: dict[str, np.ndarray], **facts) -> None:
        """Record facts about a kept set (merged with what is known already)."""
        key = mask_key(kept)
        self.verdicts[key] = dataclasses.replace(self.verdicts.get(key, Verdict()), **facts)


def mask_key(kept: dict[str, np.ndarray]) -> bytes:
    import numpy as np

    return b"|".join(
        name.encode() + b":" + np.packbits(kept[name]).tobytes() for name in sorted(kept)
    )


class Pass(Protocol):
    name: ClassVar[str]
    kind: ClassVar[str]

    def run(self, ir: IR, ctx: PassContext) -> PassResult: ...


class PassFailed(LegocError):
    """A pass raised: the message names it and the passes that ran before it."""

    exit_code = 1


class PreconditionFailed(LegocError):
    """A pass was given an IR or a context it cannot work on (a pipeline put together wrong)."""

    exit_code = 2


class PassOptionError(LegocError):
    """A pipeline string names an unknown pass or option, or a value of the wrong type."""

    exit_code = 2


def pass_text(p: Pass) -> str:
    """`name` or `name{option=value,...}` with the options that differ from their defaults."""
    options = []
    for f in dataclasses.fields(p):
        value = getattr(p, f.name)
        default = f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING
        if value != default:
            options.append(f"{f.name}={_format(value)}")
    return p.name + (f"{{{','.join(options)}}}" if options else "")


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class PipelineResult:
    ir: IR
    reports: list[tuple[str, dict]]
    trace: list[dict]
    changed: bool


@dataclass(frozen=True)
class Pipeline:
    """An explicit ordered list of passes: `parse_pipeline("auto,repair,minimize")`."""

    passes: tuple[Pass, ...]

    @classmethod
    def parse(cls, text: str, registry: Mapping[str, type]) -> Pipeline:
        """Passes from `name{option=value,...}` items separated by commas; the names come
        from `registry` (every pass: legoc.passes.registry.parse_pipeline; rewrites only:
        legoc.passes.rewrite.rewrite_pipeline); errors name the item at fault."""
        items = _split(text)
        if not items:
            raise PassOptionError(f"pipeline {text!r}: no passes")
        return cls(tuple(_build(item, registry) for item in items))

    def __str__(self) -> str:
        return ",".join(pass_text(p) for p in self.passes)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.passes]

    def run(self, ir: IR, ctx: PassContext | None = None) -> PipelineResult:
        """Run the passes in order; a pass that raises (other than a LegocError) is reported
        with the passes that ran before it. Passes that had nothing to look at (empty stats)
        are left out of the reports."""
        ctx = ctx if ctx is not None else PassContext()
        reports: list[tuple[str, dict]] = []
        trace: list[dict] = []
        ran: list[str] = []
        changed = False
        for p in self.passes:
            try:
                check = getattr(p, "check", None)
                if check is not None:
                    check(ir, ctx)
                result = p.run(ir, ctx.for_pass())
            except LegocError:
                raise
            except Exception as exc:  # wrap with pipeline context
                before = ", ".join(ran) or "none"
                raise PassFailed(
                    f"pass {p.name} failed ({exc.__class__.__name__}: {exc}); passes run before "
                    f"it: {before}; this is a legoc bug, please report it with --debug output"
                ) from exc
            ran.append(p.name)
            if result.stats:
                reports.append((p.name, result.stats))
            trace += result.trace
            changed = changed or result.changed
            ir = result.ir
            if ctx.after is not None:
                ctx.after(p.name, ir)
        return PipelineResult(ir, reports, trace, changed)


def _split(text: str) -> list[str]:
    """Top-level comma-separated items (commas inside {...} belong to an item's options)."""
    items, depth, current = [], 0, ""
    for char in text:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise PassOptionError(f"pipeline {text!r}: unbalanced '}}'")
        if char == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += char
    if depth:
        raise PassOptionError(f"pipeline {text!r}: unbalanced '{{'")
    items.append(current.strip())
    if any(not item for item in items):
        raise PassOptionError(f"pipeline {text!r}: empty pass name")
    return [item for item in items if item]


def _build(item: str, registry: dict[str, type]) -> Pass:
    name, _, rest = item.partition("{")
    name = name.strip()
    if name not in registry:
        raise PassOptionError(f"unknown pass {name!r}; passes are: {', '.join(sorted(registry))}")
    cls = registry[name]
    if rest and not rest.endswith("}"):
        raise PassOptionError(f"pass {name}: options must be written {{key=value,...}}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    options = {}
    for pair in filter(None, (p.strip() for p in rest[:-1].split(","))) if rest else []:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            known = ", ".join(fields) or "none"
            raise PassOptionError(f"pass {name}: unknown option {key!r} (options: {known})")
        options[key] = _convert(name, key, value.strip(), hints.get(key))
    return cls(**options)


def _convert(name: str, key: str, text: str, hint) -> Any:
    """The option's value as its field's type (int, float, bool, str)."""
    wanted = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    for kind in wanted:
        try:
            if kind is bool and text.lower() in ("true", "false"):
                return text.lower() == "true"
            if kind is int and text.lstrip("-").isdigit():
                return int(text)
            if kind is float:
                return float(text)
            if kind is str:
                return text
        except ValueError:
            continue
    label = " | ".join(getattr(t, "__name__", str(t)) for t in wanted)
    raise PassOptionError(f"pass {name}: option {key}={text!r} is not a {label}")
