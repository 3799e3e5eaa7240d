"""The task spec (docs/task-spec.md): schema and validation with key-path errors.

Reading the data files a spec names is `legoc.task.data`."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from legoc.errors import LegocError
from legoc.task.compare_spec import CompareSpec
from legoc.task.data import Split, data_keys, load_split  # noqa: F401 - re-exported

SEARCH_METHODS = ("auto", "mcts", "greedy", "mask", "attribution")
# where errors send users: shipped in the repository, and printable from any install
REFERENCE = "docs/task-spec.md, or the JSON Schema that `legoc schema` prints"
METRICS = ("accuracy", "kl", "logit_diff", "mse")
RESERVED_KEYS = ("y", "y_alt")  # data-file tensors that are labels, never positions


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


SEED_LIMIT = 2**63  # seeds are in [0, 2**63): what every generator legoc seeds accepts


def seed_problem(seed: int) -> str | None:
    """Why `seed` cannot seed a run, or None."""
    if not 0 <= seed < SEED_LIMIT:
        return f"must be an integer in [0, 2**63 - 1], got {seed}"
    return None


def check_seed(seed: int | None, label: str = "--seed") -> None:
    problem = None if seed is None else seed_problem(seed)
    if problem:
        raise LegocError(f"{label}: {problem}")


def _no_nul(path: str) -> str:
    if "\x00" in path:
        raise ValueError(f"{path!r} contains a NUL byte; fix the path")
    return path


class DataSpec(_Strict):
    search: str = Field(
        description="Data file the search scores against (relative to the spec's folder)."
    )
    eval: dict[str, str] = Field(
        default_factory=dict,
        description="Named eval splits: data files reported per block, never searched on.",
    )

    @field_validator("search")
    @classmethod
    def _search_path(cls, value: str) -> str:
        return _no_nul(value)

    @field_validator("eval")
    @classmethod
    def _eval_paths(cls, value: dict[str, str]) -> dict[str, str]:
        for path in value.values():
            _no_nul(path)
        return value


class SearchSpec(_Strict):
    # `validate` is spelled validate_fraction in Python (BaseModel.validate exists); dumps
    # write the spec's spelling so they validate again
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, serialize_by_alias=True)

    method: Literal["auto", "mcts", "greedy", "mask", "attribution"] = Field(
        "auto", description="Search method (auto: learned masks, then a 1-minimality sweep)."
    )
    budget: int = Field(2000, gt=0, description="Most candidate evaluations the search may run.")
    seed: int = Field(
        0,
        description="Seed of the search's random choices, in [0, 2**63).",
        json_schema_extra={"minimum": 0, "exclusiveMaximum": 2**63},  # see _seed_in_range
    )
    validate_fraction: float | None = Field(
        None,
        alias="validate",  # `validate` itself would shadow pydantic's BaseModel.validate
        gt=0,
        lt=1,
        allow_inf_nan=False,
        description="Hold out this seeded fraction of the search data as `validate` and accept "
        "a candidate only if it is faithful on both parts (the over-fitting guard).",
    )

    @field_validator("seed")
    @classmethod
    def _seed_in_range(cls, value: int) -> int:
        problem = seed_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class FinetuneSpec(_Strict):
    epochs: int = Field(5, gt=0, description="Most epochs of retraining (early stopping).")
    lr: float = Field(
        1.0e-3, gt=0, allow_inf_nan=False, description="Adam learning rate for retraining."
    )


class TaskSpec(_Strict):
    """Schema version 1 of the task spec; unknown keys are errors so typos cannot hide."""

    legoc: Literal[1] = Field(description="Schema version; 1.")
    name: str = Field(min_length=1, description="Task name; goes into the block's metadata.")
    data: DataSpec = Field(description="The task's data files.")
    outputs: list[int] | None = Field(
        None,
        description="Indices into the model output's last dim that the task reads; the block "
        "outputs exactly these, in this order, and labels index into this list.",
    )
    metric: Literal["accuracy", "kl", "logit_diff", "mse"] = Field(
        "accuracy", description="Task metric that faithfulness is measured with."
    )
    keep: float = Field(
        0.95,
        gt=0,
        allow_inf_nan=False,
        description="Faithfulness floor on the search split, a fraction in (0, 1] (1.0 = as "
        "good as the full model).",
        json_schema_extra={"maximum": 1},  # checked by _keep_is_a_fraction, with a hint
    )
    position: str = Field(
        "all",
        description="Which output positions the task reads: all (every position; labels per "
        "position, -100 where one does not count), last (each row's last real token, from the "
        "attention mask), or the name of a tensor in the data files holding one position "
        "index per row.",
    )
    ablation: Literal["mean", "zero", "mean-per-position"] = Field(
        "mean",
        description="What a removed unit is replaced by: its mean activation, zero, or its mean "
        "at each token position (over real tokens; attention heads keep one mean; positions "
        "past the search data's take the overall mean).",
    )
    scope: list[str] | None = Field(
        None, description="Globs of module names that may be pruned (default: all)."
    )
    search: SearchSpec = Field(default_factory=SearchSpec, description="Search settings.")
    finetune: FinetuneSpec | None = Field(
        None, description="Retrain the extracted block's weights on search data (option C)."
    )
    compare: CompareSpec | None = Field(
        None, description="Settings of `legoc compare` only: keep levels and scope sets."
    )

    @field_validator("keep")
    @classmethod
    def _keep_is_a_fraction(cls, value: float) -> float:
        if value > 1:  # 95 meant as a percentage would start a search that can never succeed
            hint = f"{value / 100:g}, not {value:g}" if 2 <= value <= 100 else "e.g. 0.95"
            raise ValueError(
                f"must be a fraction in (0, 1] (of the full model's score), got {value:g}: "
                f"write {hint}"
            )
        return value

    @field_validator("position")
    @classmethod
    def _position_named(cls, value: str) -> str:
        if not value or value in RESERVED_KEYS:
            raise ValueError(
                f"must be all, last or the name of a per-row index tensor in the data files, "
                f"got {value!r}"
            )
        return value

    @field_validator("outputs")
    @classmethod
    def _outputs_distinct(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            if not value:
                raise ValueError("must list at least one output index")
            if min(value) < 0:
                raise ValueError("indices must be >= 0")
            if len(set(value)) != len(value):
                raise ValueError("indices must be distinct")
        return value


@dataclass(frozen=True)
class Task:
    """A validated spec plus where it lives, so relative data paths resolve against it."""

    spec: TaskSpec
    path: Path
    sha256: str

    @property
    def name(self) -> str:
        return self.spec.name

    def data_path(self, relative: str, key: str = "data") -> Path:
        try:
            return (self.path.parent / relative).resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop; a NUL byte
            why = "is a symlink loop" if not isinstance(exc, ValueError) else "is not a valid path"
            raise LegocError(f"{self.path}: {key}: data file {relative} {why}") from None

    def split_paths(self) -> dict[str, Path]:
        """All splits, `search` first; eval splits are only ever reported, never searched on."""
        paths = {"search": self.data_path(self.spec.data.search, "data.search")}
        for name, rel in self.spec.data.eval.items():
            paths[name] = self.data_path(rel, f"data.eval.{name}")
        return paths


def spec_json_schema() -> dict:
    """The spec's JSON Schema (draft 2020-12), generated from `TaskSpec`: what `legoc schema`
    prints, so editors can check specs as they are typed."""
    schema = TaskSpec.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "legoc task spec, schema version 1",
    }


def _format_error(error: dict) -> str:
    loc = ".".join(str(part) for part in error["loc"]) or "<top level>"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{loc}: unknown key (check its spelling against {REFERENCE})"
    if kind == "missing":
        return f"{loc}: required key is missing"
    if kind == "greater_than":
        return f"{loc}: must be > {error['ctx']['gt']}"
    if kind == "less_than":
        return f"{loc}: must be < {error['ctx']['lt']}"
    if kind == "finite_number":
        return f"{loc}: must be a finite number"
    if kind == "literal_error":
        return f"{loc}: must be one of {error['ctx']['expected']}"
    if kind == "value_error":  # our validators' own words, without pydantic's prefix
        return f"{loc}: {error['ctx']['error']}"
    return f"{loc}: {error['msg']}"


class _SpecLoader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-3` (no dot) as a string; spec authors mean a number."""


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


MAX_DEPTH = 8  # the schema nests three levels; deeper text is a mistake or an attack


def _check_structure(text: str, source: str) -> None:
    """Refuse aliases and deep nesting before building any object: an alias bomb expands to
    billions of items under validation, and deep nesting overflows the recursive composer."""
    depth = 0
    for event in yaml.parse(text, Loader=_SpecLoader):
        if isinstance(event, yaml.AliasEvent):
            raise LegocError(
                f"{source}: YAML aliases (*{event.anchor}) are not allowed in a spec; "
                "write the value out"
            )
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise LegocError(
                    f"{source}: nested more than {MAX_DEPTH} levels deep; a spec nests at most "
                    f"three (see {REFERENCE})"
                )
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def parse_spec(text: str, source: str = "spec") -> TaskSpec:
    """Validate spec text; raise LegocError naming the first bad key path."""
    try:
        _check_structure(text, source)
        raw = yaml.load(text, Loader=_SpecLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None)
        what = f": {problem}" if problem else f" ({exc.__class__.__name__})"
        raise LegocError(f"{source}: not valid YAML{where}{what}; fix the syntax") from None
    if not isinstance(raw, dict):
        raise LegocError(f"{source}: must be a YAML mapping with keys legoc, name, data, ...")
    try:
        return TaskSpec.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        first = _format_error(errors[0])
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise LegocError(f"{source}: {first}{more}") from None


def load_task(path: str | Path) -> Task:
    path = Path(path)
    if not path.is_file():
        raise LegocError(f"task spec {path}: file not found; pass --task path/to/spec.yaml")
    data = path.read_bytes()
    spec = parse_spec(data.decode("utf-8", errors="replace"), source=str(path))
    task = Task(spec=spec, path=path.resolve(), sha256=hashlib.sha256(data).hexdigest())
    for name, split_path in task.split_paths().items():
        if not split_path.is_file():
            key = "data.search" if name == "search" else f"data.eval.{name}"
            raise LegocError(f"{path}: {key}: data file {split_path} not found")
    return task
