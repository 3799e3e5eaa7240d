"""Drop ops that are the identity in eval mode (stochastic depth, drop path, dropout variants).

torchvision marks `stochastic_depth` with `torch.fx.wrap`, so a traced EfficientNet or ConvNeXt
holds an opaque call per block that the unit analysis cannot see through (it froze every
residual stream). In eval mode these ops return their input unchanged, so capture removes them.

Detection is by name plus a check, so a same-named op that is not the identity stays: the
function (called with the node's own constant arguments) or the module (in eval mode) must
return its input unchanged on random tensors.
"""

from __future__ import annotations

import torch
import torch.fx

# function and module class names of ops that are the identity in eval mode
FUNCTIONS = {"stochastic_depth", "drop_path", "drop_block2d", "drop_block3d", "dropout"}
MODULES = {"StochasticDepth", "DropPath", "DropBlock2d", "DropBlock3d"}
_PROBES = ((2, 3), (2, 3, 4, 5))


def drop_identities(gm: torch.fx.GraphModule) -> int:
    """Replace every eval-mode identity op by its input; returns how many were removed."""
    removed = 0
    for node in list(gm.graph.nodes):
        if not node.args or not isinstance(node.args[0], torch.fx.Node):
            continue
        if _is_identity(gm, node):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            removed += 1
    if removed:
        gm.graph.lint()
        gm.recompile()
    return removed


def _is_identity(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if type(module).__name__ not in MODULES or module.training or node.kwargs:
            return False
        return len(node.args) == 1 and _returns_input(module)
    if node.op != "call_function" or getattr(node.target, "__name__", None) not in FUNCTIONS:
        return False
    rest = [*node.args[1:], *node.kwargs.values()]
    if any(isinstance(a, torch.fx.Node) for a in rest):
        return False  # an argument computed at run time (e.g. `self.training` as a tensor)
    return _returns_input(lambda x: node.target(x, *node.args[1:], **node.kwargs))


def _returns_input(fn) -> bool:
    generator = torch.Generator().manual_seed(0)
    for shape in _PROBES:
        x = torch.randn(shape, generator=generator)
        try:
            with torch.no_grad():
                y = fn(x)
        except Exception:  # not an op of this shape (or not the op we think): keep it
            return False
        if not isinstance(y, torch.Tensor) or y.shape != x.shape or not torch.equal(y, x):
            return False
    return True
