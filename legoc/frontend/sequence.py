"""The token axis of sequence models: which inputs have one, and which lengths a capture accepts.

A block from a language model must take sentences of any length, not only the search data's.
Inputs that are integer tensors of shape (batch, tokens) (`input_ids`, `attention_mask`,
`token_type_ids`, ...) share one dynamic token axis when captured; the accepted range comes from
the exported graph's constraints (e.g. a position-embedding table of 512 rows) and the model's
configured position limit. The range travels with the graph (`legoc.ir.tokens`).
"""

from __future__ import annotations

import torch
import torch.fx
import torch.utils._pytree as pytree
from torch import nn

from legoc.ir.tokens import with_length

POSITION_LIMITS = ("max_position_embeddings", "n_positions", "max_seq_len")


def token_inputs(example: dict[str, torch.Tensor], input_names: list[str]) -> list[str]:
    """Inputs with a token axis (axis 1): integer tensors of shape (batch, tokens)."""
    return [
        name
        for name in input_names
        if example[name].dim() == 2
        and not example[name].is_floating_point()
        and example[name].dtype != torch.bool
    ]


def accepted_lengths(
    program: torch.export.ExportedProgram,
    tokens: list[str],
    module: nn.Module,
    example: dict[str, torch.Tensor] | None = None,
) -> dict:
    """The token lengths the exported graph accepts: its range constraint on the token axis,
    bounded by the model's configured position limit when it has one, and by what the model
    runs at (`example`'s first row): RoBERTa's positions start after its padding index, so it
    takes two tokens fewer than its table's rows."""
    length = _placeholder_shape(program, tokens[0])[1]
    if isinstance(length, int):  # the exporter specialised without complaint
        return fixed_lengths(tokens, length, "the exported graph fixes the token axis")
    ranges = {str(k): v for k, v in program.range_constraints.items()}
    bounds = ranges.get(str(length.node.expr))
    low = int(bounds.lower) if bounds is not None else 1
    high = _finite(bounds.upper) if bounds is not None else None
    limit = position_limit(module)
    if limit is not None:
        high = limit if high is None else min(high, limit)
    if high is not None and example is not None:
        high = _runs_up_to(module, example, tokens, high)
    return {"inputs": list(tokens), "min": low, "max": high}


def _runs_up_to(module: nn.Module, example: dict, tokens: list[str], high: int) -> int:
    """`high`, or the longest length below it that the model runs at (one row)."""
    rows = {name: value[:1] for name, value in example.items()}

    def runs(n: int) -> bool:
        with torch.no_grad():
            try:
                module(**with_length(rows, tokens, n))
            except Exception:
                return False
        return True

    length = int(example[tokens[0]].shape[1])
    if high <= length or runs(high):
        return high
    return _bisect(runs, length, high)


def fixed_lengths(tokens: list[str], length: int, reason: str) -> dict:
    """A capture whose token axis could not be left dynamic: the one length, and why."""
    return {"inputs": list(tokens), "min": length, "max": length, "fixed": reason[:300]}


def position_limit(module: nn.Module) -> int | None:
    """The smallest position limit any submodule's config declares (None: none declared)."""
    limits = [
        int(value)
        for m in module.modules()
        if (config := getattr(m, "config", None)) is not None
        for key in POSITION_LIMITS
        if isinstance(value := getattr(config, key, None), int) and value > 0
    ]
    return min(limits) if limits else None


def _placeholder_shape(program: torch.export.ExportedProgram, name: str):
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name == name:
            return node.meta["val"].shape
    raise KeyError(name)


def _finite(value) -> int | None:
    if getattr(value, "is_finite", True) is False:  # sympy's (int_)oo: no bound
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None
    return number if number < 2**62 else None


PROBE_ROWS = 2  # rows of the example run at each probed length
PROBE_FACTOR = 4  # lengths are probed up to this multiple of the example's


def probed_lengths(
    module: nn.Module,
    gm: torch.fx.GraphModule,
    example: dict[str, torch.Tensor],
    input_names: list[str],
) -> dict | None:
    """The token lengths an fx-traced graph accepts, found by running it and the model at other
    lengths: a symbolic trace reads sizes at run time, so it takes any length the model takes,
    unless the code bakes one in (a literal size), which a mismatch reveals. The upper end is
    the model's declared position limit, else the largest length up to PROBE_FACTOR× the
    example's that the model runs at (None when it runs at all of them). None: no token input."""
    tokens = token_inputs(example, input_names)
    if not tokens:
        return None
    length = int(example[tokens[0]].shape[1])
    rows = {name: example[name][:PROBE_ROWS] for name in input_names}

    def runs(n: int) -> bool:
        """The model runs at n tokens, its rows intact; raises ValueError when the graph
        disagrees with it."""
        resized = with_length(rows, tokens, n)
        args = [resized[name] for name in input_names]
        with torch.no_grad():
            try:
                expected = module(*args)
            except Exception:
                return False
            if _rows(expected) != _rows(own):  # a length baked into a view moves rows
                return False
            try:
                got = gm(*args)
            except Exception as exc:
                raise ValueError(
                    f"the traced graph fails at {n} tokens: {_first_line(exc)}"
                ) from None
        if not _same_outputs(expected, got):
            raise ValueError(f"the traced graph differs from the model at {n} tokens")
        return True

    try:
        with torch.no_grad():
            own = module(*[rows[name] for name in input_names])
    except Exception:  # the data does not fit the model: analysis says so, naming the split
        return None
    limit = position_limit(module)
    top = PROBE_FACTOR * length if limit is None else min(limit, PROBE_FACTOR * length)
    try:
        low = 1 if runs(1) else _bisect(runs, length, 1)
        # the declared limit, or None: the model ran at every probed length
        high = limit if runs(top) else _bisect(runs, length, top)
    except ValueError as exc:
        return fixed_lengths(tokens, length, str(exc))
    if low == high == length:
        return fixed_lengths(tokens, length, f"the model runs at {length} tokens only")
    return {"inputs": list(tokens), "min": low, "max": high}


def _bisect(runs, ok: int, fails: int) -> int:
    """The length nearest `fails` that the model runs at, between `ok` (runs) and `fails`
    (does not), by binary search; either may be the larger."""
    while abs(fails - ok) > 1:
        mid = (fails + ok) // 2
        if runs(mid):
            ok = mid
        else:
            fails = mid
    return ok


def _rows(output) -> list[int]:
    return [
        t.shape[0] for t in pytree.tree_leaves(output) if isinstance(t, torch.Tensor) and t.dim()
    ]


def _same_outputs(expected, got) -> bool:
    left, right = pytree.tree_leaves(expected), pytree.tree_leaves(got)
    if len(left) != len(right):
        return False
    for a, b in zip(left, right):
        if not isinstance(a, torch.Tensor):
            continue
        if not isinstance(b, torch.Tensor) or a.shape != b.shape:
            return False
        if a.is_floating_point():
            scale = a.abs().max().item() if a.numel() else 0.0
            tolerance = 64 * torch.finfo(a.dtype).eps * max(scale, 1.0)
            if (a - b).abs().max().item() > tolerance:
                return False
        elif not torch.equal(a, b):
            return False
    return True


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
