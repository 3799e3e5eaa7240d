"""The IR's one deterministic text form (`legoc inspect`, debugging, golden tests): a line per
node with its shape and dtype inline, weights by shape never by value, attributes sorted, then
the unit spaces, the group count and the parameter count."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import torch
import torch.fx

from legoc.ir.graph import get_attr_tensor
from legoc.ir.weight_uses import first_use_of

if TYPE_CHECKING:
    from legoc.ir.core import IR


def _fmt_shape(node: torch.fx.Node) -> str:
    shape = node.meta.get("legoc.shape")
    meta = node.meta.get("tensor_meta")
    if shape is None or meta is None or not hasattr(meta, "dtype"):
        return ""
    dtype = str(meta.dtype).replace("torch.", "").replace("float", "f").replace("int", "i")
    return f"{dtype}[{','.join(str(d) for d in shape)}]"


def _fmt_arg(arg, gm) -> str:
    if isinstance(arg, torch.fx.Node):
        return f"%{arg.name}"
    if isinstance(arg, (tuple, list)):
        inner = ", ".join(_fmt_arg(a, gm) for a in arg)
        return f"({inner})" if isinstance(arg, tuple) else f"[{inner}]"
    if isinstance(arg, float):
        return repr(float(f"{arg:.6g}"))
    return repr(arg)


def _target_name(node: torch.fx.Node, gm: torch.fx.GraphModule) -> str:
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        extra = module.extra_repr()
        return f"{type(module).__name__}[{node.target}{'; ' + extra if extra else ''}]"
    if node.op == "call_method":
        return f".{node.target}"
    target = node.target
    module = getattr(target, "__module__", "") or ""
    name = getattr(target, "__name__", str(target))
    if module.startswith("legoc"):
        return f"legoc.{name}"
    return name


def ir_text(ir: IR, source: bool = False) -> str:
    """Deterministic text: one line per node with shape, weights by shape, sorted attributes.

    `source`: the IR of a source model, whose buffers (BatchNorm statistics) are not
    parameters: the params line counts them apart. In a block every tensor is a weight."""
    gm = ir.gm
    lines = []
    inputs = ", ".join(
        f"%{n.name}: {_fmt_shape(n)}" for n in gm.graph.nodes if n.op == "placeholder"
    )
    lines.append(f"graph({inputs}):")
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "get_attr":
            tensor = get_attr_tensor(gm, node.target)
            desc = _fmt_shape(node) or f"{tuple(tensor.shape)}"
            lines.append(f"  %{node.name} = param {node.target} : {desc}")
            continue
        if node.op == "output":
            lines.append(f"  return {_fmt_arg(node.args[0], gm)}")
            continue
        args = ", ".join(_fmt_arg(a, gm) for a in node.args)
        kwargs = ", ".join(f"{k}={_fmt_arg(v, gm)}" for k, v in sorted(node.kwargs.items()))
        call = ", ".join(part for part in (args, kwargs) if part)
        shape = _fmt_shape(node)
        lines.append(
            f"  %{node.name} = {_target_name(node, gm)}({call})" + (f" : {shape}" if shape else "")
        )
    lines.append("units:")
    uses = Counter(first_use_of(name) or name for name in ir.spaces)
    for name, space in sorted(ir.spaces.items()):
        if first_use_of(name) is not None:  # a weight's later uses: told on its first
            continue
        groups = [ir.analysis.unit_group[u] for u in range(space.offset, space.offset + space.size)]
        coupled = sorted({c for g in set(groups) for c in ir.groups[g].coupled_by})
        frozen = sorted(
            {
                _frozen_note(ir.groups[g].frozen, ir.groups[g].frozen_at)
                for g in set(groups)
                if ir.groups[g].frozen
            }
        )
        dead = sum(ir.groups[g].dead for g in set(groups))
        kept = int(ir.kept[name].sum())
        notes = []
        if coupled:
            partners = sorted(
                {
                    first_use_of(other) or other
                    for g in set(groups)
                    for other, _ in ir.groups[g].members
                }
                - {name}
            )
            n_groups = len(set(groups))
            if partners:
                notes.append(f"coupled with {', '.join(partners)} by {', '.join(coupled)}")
            elif n_groups < space.size:  # coupled within itself: e.g. a fused projection's heads
                per_group = space.size // n_groups
                notes.append(f"{n_groups} groups of {per_group} by {', '.join(coupled)}")
        if frozen:
            notes.append(f"frozen: {'; '.join(frozen)}")
        if dead:
            notes.append(f"{dead} unread")
        following = sum(bool(ir.groups[g].follows) for g in set(groups))
        if following:  # shared KV heads: derived, never searched
            notes.append(f"{following} groups go when all the query heads reading them go")
        note = f"  ({'; '.join(notes)})" if notes else ""
        applied = f" applied {uses[name]} times" if uses[name] > 1 else ""
        lines.append(f"  {name}: {space.kind}{applied}, {kept}/{space.size} units kept{note}")
    removable = len(ir.removable_groups())
    lines.append(f"groups: {len(ir.groups)} ({removable} removable)")
    buffers = ir.buffer_count() if source else 0
    note = f" (+ {buffers} in buffers)" if buffers else ""
    lines.append(f"params: {ir.param_count() - buffers}{note}")
    return "\n".join(lines) + "\n"


def _frozen_note(why: str, at: str | None) -> str:
    """A frozen reason with the op and node that froze it (none for scope and the output)."""
    return (
        f"{why} (by {at})"
        if at and why not in ("outside scope", "reaches the model output")
        else why
    )
