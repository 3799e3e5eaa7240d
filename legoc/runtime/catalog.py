"""A local catalogue of blocks: a folder with `index.json` and the blocks copied into
`blocks/NAME.onnx` (external data embedded, so each entry is one file with one sha256)."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import onnx

from legoc.errors import LegocError
from legoc.runtime.block import Block, malformed_metadata
from legoc.runtime.files import atomic_file, sha256_file

INDEX = "index.json"
BLOCKS = "blocks"
SCHEMA = 1
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class Entry:
    name: str
    file: str  # relative to the catalogue folder
    sha256: str
    bytes: int
    task: str | None
    source_sha256: str | None
    params: dict  # {"source": n, "block": n} (block counted from the file when not recorded)
    inputs: list[str]
    outputs: list[str]
    added: str  # ISO 8601, UTC
    sources: list[str] = field(default_factory=list)  # every source model, parts included
    tasks: list[str] = field(default_factory=list)  # every task, parts included


class Catalog:
    """Open with `Catalog(folder)`; `add` creates the folder (its parent must exist)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def index_path(self) -> Path:
        return self.root / INDEX

    def entries(self) -> dict[str, Entry]:
        if not self.root.is_dir():
            raise LegocError(
                f"catalogue {self.root}: folder not found; create one with "
                f"`legoc catalog add {self.root} BLOCK`"
            )
        if not self.index_path.is_file():
            return {}
        try:
            raw = json.loads(self.index_path.read_text(encoding="utf-8"))
            if raw.get("legoc_catalog") != SCHEMA:
                raise ValueError(f"unknown schema {raw.get('legoc_catalog')!r}")
            return {name: Entry(**body) for name, body in raw["entries"].items()}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise LegocError(
                f"catalogue {self.root}: {INDEX} is not a legoc catalogue index ({exc}); "
                "restore it or start a new catalogue folder"
            ) from None

    def _write(self, entries: dict[str, Entry]) -> None:
        body = {
            "legoc_catalog": SCHEMA,
            "entries": {name: asdict(entries[name]) for name in sorted(entries)},
        }
        with atomic_file(self.index_path) as tmp:
            tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def add(self, block_path: str | Path, name: str | None = None, replace: bool = False) -> Entry:
        """Copy a block in (checked: it loads safely) and index it."""
        block_path = Path(block_path)
        block = Block.load(block_path)
        block.check_loads()
        name = name or block_path.stem
        if not NAME.fullmatch(name):
            raise LegocError(
                f"catalogue name {name!r}: use letters, digits, '.', '_' and '-' (pass --name)"
            )
        created = not self.root.exists()
        if created:
            parent = self.root.parent
            if parent.exists() and not parent.is_dir():
                raise LegocError(
                    f"catalogue {self.root}: {parent} is a file, not a folder; pick another path"
                )
            if not parent.is_dir():
                raise LegocError(
                    f"catalogue {self.root}: folder {parent} does not exist; create it"
                )
        try:
            return self._add(block, name, replace)
        except BaseException:
            if created and self.root.is_dir():
                shutil.rmtree(self.root)  # a failed first add leaves no half-made catalogue
            raise

    def _add(self, block: Block, name: str, replace: bool) -> Entry:
        try:
            self.root.mkdir(exist_ok=True)
            (self.root / BLOCKS).mkdir(exist_ok=True)
        except OSError as exc:
            raise LegocError(
                f"catalogue {self.root}: cannot write in {self.root.parent} "
                f"({exc.strerror or exc}); pick a writable folder"
            ) from None
        entries = self.entries()
        if name in entries and not replace:
            raise LegocError(
                f"catalogue {self.root}: '{name}' is already an entry; pass --name NEW or --replace"
            )
        relative = f"{BLOCKS}/{name}.onnx"
        try:
            _entry(block, name, relative, "", 0)  # its metadata reads before anything is written
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise malformed_metadata(block, exc) from None
        with atomic_file(self.root / relative, {"the block": block.path}) as tmp:
            onnx.save(block.model, str(tmp))  # external data embedded
            digest, size = sha256_file(tmp), tmp.stat().st_size
        entries[name] = _entry(block, name, relative, digest, size)
        self._write(entries)
        return entries[name]

    def get(self, name: str) -> Entry:
        entries = self.entries()
        if name not in entries:
            known = ", ".join(sorted(entries)) or "none"
            raise LegocError(f"catalogue {self.root}: no entry '{name}' (entries: {known})")
        return entries[name]

    def load(self, name: str) -> Block:
        """The entry's block, after checking its sha256."""
        entry = self.get(name)
        self._check(entry)
        return Block.load(self.root / entry.file)

    def search(self, task: str | None = None, source: str | None = None) -> list[Entry]:
        """Entries whose task (or a part's) contains `task` or matches it as a glob (both
        case-insensitive) and whose source model (or a part's) starts with the sha256 prefix
        `source`."""
        found = []
        for entry in self.entries().values():
            if task is not None and not any(task_matches(t, task) for t in entry.tasks):
                continue
            if source is not None and not any(s.startswith(source.lower()) for s in entry.sources):
                continue
            found.append(entry)
        return found

    def verify(self) -> list[Entry]:
        """Recompute every entry's sha256; raise naming every entry that fails."""
        entries = self.entries()
        problems = []
        for entry in entries.values():
            try:
                self._check(entry)
            except LegocError as exc:
                problems.append(str(exc))
        if problems:
            raise LegocError(f"catalogue {self.root}: " + " | ".join(problems))
        return list(entries.values())

    def _check(self, entry: Entry) -> None:
        path = self.root / entry.file
        readd = (
            f"re-add it with `legoc catalog add {self.root} BLOCK --name {entry.name} --replace`"
        )
        if Path(entry.file).is_absolute() or ".." in Path(entry.file).parts:
            raise LegocError(f"entry '{entry.name}': file {entry.file} is outside the catalogue")
        if not path.is_file():
            raise LegocError(f"entry '{entry.name}': {entry.file} is missing; {readd}")
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise LegocError(
                f"entry '{entry.name}': {entry.file} has sha256 {digest[:12]}... but the index "
                f"recorded {entry.sha256[:12]}...: the file changed after it was added; {readd}"
            )


def task_matches(name: str, query: str) -> bool:
    """`query` is part of the task name, or a glob (`*`, `?`, `[...]`) matching all of it."""
    name, query = name.lower(), query.lower()
    return query in name or fnmatch.fnmatchcase(name, query)


def _entry(block: Block, name: str, relative: str, digest: str, size: int) -> Entry:
    rationale = block.meta_dict("legoc.rationale")
    params = dict(rationale.get("params") or {})
    params["block"] = block.rationale_params()
    tasks, sources = [], []
    for key, value in sorted(block.metadata.items()):
        if key == "legoc.task" or key.endswith(".legoc.task"):
            tasks.append(value)
        if key == "legoc.source_sha256" or key.endswith(".legoc.source_sha256"):
            sources.append(value)
    return Entry(
        name=name,
        file=relative,
        sha256=digest,
        bytes=size,
        task=block.task,
        source_sha256=block.metadata.get("legoc.source_sha256"),
        params=params,
        inputs=block.input_names,
        outputs=block.output_names,
        added=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        sources=sorted(set(sources)),
        tasks=sorted(set(tasks)),
    )
