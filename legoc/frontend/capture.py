"""Capture with torch.export (non-strict) for models torch.fx cannot trace.

Hugging Face models (and torch's own fused transformer layers) are full of Python control flow
on tensors that symbolic tracing cannot follow; torch.export runs the real code on example
inputs instead, with the batch axis left dynamic (and the token axis of token inputs, where the
model allows it), and its nodes keep the module they came from.
The result is lowered onto the same functional ops fx gives, so every later pass sees one
vocabulary. The model's output (a tuple, dict or Hugging Face output object) is reduced here to
the one tensor the task reads.
"""

from __future__ import annotations

import contextlib
import inspect
import logging

import torch
import torch.fx
import torch.utils._pytree as pytree
from torch import nn

from legoc.errors import LegocError
from legoc.frontend.lowering import lower_aten
from legoc.frontend.sequence import accepted_lengths, fixed_lengths, token_inputs
from legoc.ir.tokens import SEQUENCE

log = logging.getLogger(__name__)

# Modules whose forward fx cannot follow (fast paths, shape checks on tensors): always export.
EXPORT_FIRST = (
    nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
    nn.TransformerEncoder,
    nn.TransformerDecoder,
    nn.Transformer,
)


def prefers_export(module: nn.Module) -> bool:
    return any(
        isinstance(m, EXPORT_FIRST) or type(m).__module__.startswith("transformers.")
        for m in module.modules()
    )


def wrapped_weight_calls(gm: torch.fx.GraphModule) -> list[str]:
    """Calls to fx-wrapped Python functions that take the model's parameters (torchvision's
    `shifted_window_attention(x, qkv_weight, proj_weight, ...)`): fx keeps each as one opaque
    node, so the layers inside are no units and whatever reads it freezes; torch.export runs
    through them."""
    params = {name for name, _ in gm.named_parameters()}
    found = []
    for node in gm.graph.nodes:
        target = node.target
        if node.op != "call_function" or not inspect.isfunction(target):
            continue
        if target.__module__.split(".")[0] in ("torch", "legoc", "_operator", "operator"):
            continue
        args = torch.fx.node.map_arg((node.args, node.kwargs), lambda n: n)
        reads = [
            n
            for n in pytree.tree_leaves(args)
            if isinstance(n, torch.fx.Node) and n.op == "get_attr" and n.target in params
        ]
        if reads:
            found.append(target.__name__)
    return sorted(set(found))


def capture(
    module: nn.Module,
    example: dict[str, torch.Tensor],
    input_names: list[str],
    model_output: str | None = None,
) -> torch.fx.GraphModule:
    """Export `module` on `example` (batch axis dynamic; the token axis too where the model
    allows it, see `legoc.frontend.sequence`) and lower it to functional ops."""
    module.eval()
    kwargs = {name: example[name] for name in input_names}
    # a block is stateless: no key/value cache in or out; a model with a config has it
    # switched off there (_without_cache), since a use_cache argument would become an input
    takes_cache = "use_cache" in inspect.signature(module.forward).parameters
    if takes_cache and not hasattr(getattr(module, "config", None), "use_cache"):
        kwargs["use_cache"] = False
    tokens = token_inputs(example, input_names)
    try:
        program, lengths = _export(module, kwargs, input_names, tokens)
    except Exception as exc:  # report the exporter's reason in one line
        raise LegocError(
            f"neither torch.fx nor torch.export can capture the model: {first_line(exc)[:300]}"
        ) from None
    leaf = _output_leaf(program.call_spec.out_spec, model_output)
    gm = lower_aten(program.module())
    if lengths is not None:
        gm.meta[SEQUENCE] = lengths
    out = next(n for n in gm.graph.nodes if n.op == "output")
    leaves = out.args[0] if isinstance(out.args[0], (tuple, list)) else (out.args[0],)
    out.args = (leaves[leaf],)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _export(module: nn.Module, kwargs: dict, input_names: list[str], tokens: list[str]):
    """torch.export with a dynamic token axis on `tokens`; where the model specialises on the
    length, again with the length fixed, the exporter's reason recorded."""
    batch = torch.export.Dim("batch")
    fixed = {name: {0: batch} for name in input_names}
    if not tokens:
        return _run_export(module, kwargs, fixed), None
    dynamic = {
        name: {0: batch, **({1: torch.export.Dim.DYNAMIC} if name in tokens else {})}
        for name in input_names
    }
    try:
        program = _run_export(module, kwargs, dynamic)
    except Exception as exc:
        reason = first_line(exc)
        log.info("the token axis stays fixed: %s", reason)
        length = int(kwargs[tokens[0]].shape[1])
        return _run_export(module, kwargs, fixed), fixed_lengths(tokens, length, reason)
    return program, accepted_lengths(program, tokens, module, kwargs)


def _run_export(module: nn.Module, kwargs: dict, dynamic: dict):
    # grad mode on: torch's transformer layers skip their fused inference fast path
    with torch.enable_grad(), _without_cache(module):
        return torch.export.export(module, (), kwargs, dynamic_shapes=dynamic, strict=False)


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _without_cache(module: nn.Module):
    """Hugging Face models default to building a key/value cache (for generation) even when
    wrapped; a block is stateless, so it is switched off while exporting."""
    configs = {id(c): c for m in module.modules() if (c := getattr(m, "config", None)) is not None}
    saved = {key: c.use_cache for key, c in configs.items() if hasattr(c, "use_cache")}
    try:
        for key in saved:
            configs[key].use_cache = False
        yield
    finally:
        for key, value in saved.items():
            configs[key].use_cache = value


def _output_leaf(spec: pytree.TreeSpec | None, model_output: str | None) -> int:
    """Index of the task's tensor among the flattened outputs: `model_output` (a key, attribute
    or position), else `logits` when the output has that key, else the first tensor."""
    if spec is None:
        return 0
    structure = pytree.tree_unflatten(list(range(spec.num_leaves)), spec)
    if model_output is None:
        picked = _lookup(structure, "logits")
        return picked if isinstance(picked, int) else pytree.tree_leaves(structure)[0]
    picked = _lookup(structure, model_output)
    if not isinstance(picked, int):
        raise LegocError(
            f"--model-output {model_output!r}: the model's output has no tensor there "
            f"(its structure: {_describe(structure)}); name a key or a position"
        )
    return picked


def _lookup(structure, key: str):
    if isinstance(structure, dict) or hasattr(structure, "keys"):
        try:
            return structure[key]
        except (KeyError, TypeError):
            pass
    if isinstance(structure, (tuple, list)) and key.lstrip("-").isdigit():
        index = int(key)
        if -len(structure) <= index < len(structure):
            return structure[index]
    return getattr(structure, key, None) if not isinstance(structure, (int, dict)) else None


def _describe(structure) -> str:
    if isinstance(structure, int):
        return "a tensor"
    if isinstance(structure, dict) or hasattr(structure, "keys"):
        return "{" + ", ".join(str(k) for k in structure) + "}"
    if isinstance(structure, (tuple, list)):
        return f"a tuple of {len(structure)}"
    return type(structure).__name__
