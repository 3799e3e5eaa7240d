"""Model files (DESIGN §3.1) to an nn.Module, and nn.Module to a traced torch.fx graph.

Formats are detected by content, never by extension. State dicts are the safe form; whole
pickled modules and ExportedProgram archives can run code hidden in the file, so they load
only with `trust_model=True`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import pickle
import struct
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from legoc.errors import LegocError
from legoc.frontend.capture import capture, prefers_export, wrapped_weight_calls
from legoc.frontend.hf import is_hf_folder, load_hf_folder
from legoc.frontend.identities import drop_identities
from legoc.frontend.lowering import fuse_rms_norm, is_aten_graph, lower_aten
from legoc.frontend.sequence import probed_lengths
from legoc.ir.tokens import SEQUENCE
from legoc.runtime.files import sha256_file

log = logging.getLogger(__name__)

SAFE_FORM = "save a state dict (torch.save(model.state_dict()) or .safetensors) and pass --arch"

# Modules traced *through*, so their parameters appear as get_attr nodes the passes can slice.
TRACE_THROUGH = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.LayerNorm,
    nn.RMSNorm,
    nn.GroupNorm,
    nn.Embedding,
)


def _opens(m: nn.Module) -> bool:
    """Only the built-in classes themselves are lowered: a subclass (torchvision's LayerNorm2d
    permutes around its layer norm) may override forward, so it is traced through instead."""
    return type(m) in TRACE_THROUGH


@dataclass(frozen=True)
class LoadedModel:
    module: nn.Module
    sha256: str
    path: Path
    kind: str  # state-dict | safetensors | pickled-module | exported-program | hf-folder
    input_names: list[str] | None = None  # a folder's: what its tokenizer produces
    tokenizer: object | None = None  # a folder's tokenizer, for text (.jsonl) splits

    def inputs(self) -> list[str]:
        """The model's input names: a folder's tokenizer inputs, else its forward arguments."""
        return list(self.input_names) if self.input_names else forward_arg_names(self.module)

    def param_count(self) -> int:
        """The model's parameters: its trainable tensors, what
        `sum(p.numel() for p in model.parameters())` counts (buffers such as BatchNorm
        statistics are not parameters). Every legoc report calls this the source's params."""
        return sum(p.numel() for p in self.module.parameters())


def detect_format(path: Path) -> str:
    """The container: zip-torch, torchscript, exported-program, safetensors, pickle, unknown."""
    with path.open("rb") as handle:
        head = handle.read(16)
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return "unknown"
        if any(n.endswith("/constants.pkl") or "/code/__torch__" in n for n in names):
            return "torchscript"
        if any(n.endswith("models/model.json") or n.endswith("archive_format") for n in names):
            return "exported-program"
        if any(n.endswith("data.pkl") for n in names):
            return "zip-torch"
        return "unknown"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 0 < header_len < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol marker: legacy torch.save
        return "pickle"
    return "unknown"


def load_factory(arch: str):
    """Resolve `package.module:factory` or `path/to/file.py:factory` to a callable."""
    if ":" not in arch:
        raise LegocError(f"--arch {arch!r}: expected 'package.module:factory' or 'file.py:factory'")
    module_ref, _, attr = arch.rpartition(":")
    try:
        if module_ref.endswith(".py"):
            file = Path(module_ref)
            if not file.is_file():
                raise LegocError(f"--arch {arch!r}: file {file} not found")
            name = f"legoc_arch_{file.stem}"
            spec = importlib.util.spec_from_file_location(name, file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses and pickling look modules up there
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
        else:
            module = importlib.import_module(module_ref)
    except LegocError:
        raise
    except Exception as exc:  # user code may raise anything on import
        hint = ""
        if isinstance(exc, ImportError) and not module_ref.endswith(".py"):
            hint = (
                "; put its package on PYTHONPATH (or pip install it), or name the file that "
                "defines the factory: --arch path/to/file.py:factory"
            )
        raise LegocError(f"--arch {arch!r}: cannot import {module_ref} ({exc}){hint}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise LegocError(f"--arch {arch!r}: {module_ref} has no callable named {attr!r}")
    return factory


def _build_from_state_dict(state: dict, arch: str | None, path: Path) -> nn.Module:
    if arch is None:
        raise LegocError(
            f"{path} is a state dict: pass --arch package.module:factory (a callable returning "
            "the nn.Module) so legoc knows the architecture"
        )
    try:
        module = load_factory(arch)()
    except LegocError:
        raise
    except Exception as exc:
        raise LegocError(
            f"--arch {arch!r}: the factory raised {exc.__class__.__name__}: {exc}"
        ) from exc
    if not isinstance(module, nn.Module):
        raise LegocError(
            f"--arch {arch!r}: the factory returned {type(module).__name__}, not an nn.Module"
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3]) or first[0]
        raise LegocError(f"{path}: the state dict does not fit --arch {arch}: {detail}") from None
    return module


def load_model(
    path: str | Path,
    arch: str | None = None,
    trust_model: bool = False,
    hf_class: str | None = None,
) -> LoadedModel:
    """Load any accepted model file (or Hugging Face folder) into an eval-mode nn.Module."""
    path = Path(path)
    if is_hf_folder(path):
        if arch is not None:
            raise LegocError(f"{path} is a Hugging Face folder: drop --arch (or use --hf-class)")
        hf = load_hf_folder(path, hf_class, trust_model)
        return LoadedModel(hf.module, hf.sha256, path, "hf-folder", hf.input_names, hf.tokenizer)
    if hf_class is not None:
        raise LegocError(f"--hf-class: {path} is not a Hugging Face folder (config.json)")
    if path.is_dir():
        raise LegocError(
            f"model {path}: a folder without config.json; give a model file, or a folder that "
            "save_pretrained wrote"
        )
    if not path.is_file():
        raise LegocError(f"model file {path}: not found")
    if path.stat().st_size == 0:
        raise LegocError(f"model file {path}: is empty; {SAFE_FORM}")
    kind = detect_format(path)
    sha = sha256_file(path)
    if kind == "torchscript":
        raise LegocError(f"{path} is a TorchScript archive, which legoc cannot trace; {SAFE_FORM}")
    if kind == "safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:
            raise LegocError(f"{path}: corrupt safetensors file ({exc}); re-save it") from None
        module, kind = _build_from_state_dict(state, arch, path), "safetensors"
    elif kind == "exported-program":
        if not trust_model:
            raise LegocError(
                f"{path} is an ExportedProgram archive: loading it can run code from the file, so "
                f"it needs --trust-model; the safe form: {SAFE_FORM}"
            )
        try:
            module = lower_aten(torch.export.load(str(path)).module())
        except Exception as exc:
            raise LegocError(f"{path}: cannot load the ExportedProgram ({exc})") from None
    elif kind in ("zip-torch", "pickle"):
        module, kind = _load_torch_save(path, arch, trust_model)
    else:
        raise LegocError(
            f"{path}: not a model file legoc recognises (corrupt or unknown format); {SAFE_FORM}"
        )
    module.eval()
    return LoadedModel(module=module, sha256=sha, path=path, kind=kind)


def _refused_global(exc: Exception) -> bool:
    """True when weights-only unpickling stopped at a class or function reference (a pickled
    object), not at bytes that are simply broken."""
    text = str(exc)
    return isinstance(exc, pickle.UnpicklingError) and (
        "Unsupported global" in text or "GLOBAL" in text
    )


def _load_torch_save(path: Path, arch: str | None, trust_model: bool) -> tuple[nn.Module, str]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as safe_exc:  # weights-only unpickling refused or file broken
        if not _refused_global(safe_exc):
            raise LegocError(
                f"{path}: corrupt or truncated torch file ({safe_exc.__class__.__name__}); "
                f"{SAFE_FORM}"
            ) from None
        if not trust_model:
            raise LegocError(
                f"{path} holds a pickled object (a whole module?): loading it can run code from "
                f"the file, so it needs --trust-model; the safe form: {SAFE_FORM}"
            ) from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except (ImportError, AttributeError) as exc:  # the pickled class is not importable here
            raise LegocError(
                f"{path}: the pickled model's class cannot be imported ({exc}); put the module "
                f"that defines it on PYTHONPATH, or use the safe form: {SAFE_FORM}"
            ) from None
        except Exception as exc:
            raise LegocError(f"{path}: cannot unpickle the model ({exc})") from None
    if isinstance(obj, nn.Module):
        return obj, "pickled-module"
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _build_from_state_dict(obj, arch, path), "state-dict"
    raise LegocError(
        f"{path}: holds a {type(obj).__name__}, not a state dict or module; {SAFE_FORM}"
    )


def forward_arg_names(module: nn.Module) -> list[str]:
    """The model's input names: its forward arguments (without defaults where possible)."""
    if isinstance(module, torch.fx.GraphModule):
        return [n.target for n in module.graph.nodes if n.op == "placeholder"]
    params = inspect.signature(module.forward).parameters.values()
    names = [
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if not names:
        raise LegocError("the model's forward takes no tensor arguments: nothing to feed it")
    return names


class _Tracer(torch.fx.Tracer):
    """Lowers Linear/Conv/Norm modules to functional calls on get_attr weights, so the passes
    can slice those weights; other modules trace as usual."""

    def call_module(self, m: nn.Module, forward, args, kwargs):
        if not _opens(m) or kwargs or len(args) != 1:
            return super().call_module(m, forward, args, kwargs)
        qualname = self.path_of_module(m)

        tensors = dict(m.named_parameters(recurse=False)) | dict(m.named_buffers(recurse=False))

        def attr(name: str):
            if tensors.get(name) is None:
                return None
            return self.create_proxy("get_attr", f"{qualname}.{name}", (), {})

        x = args[0]
        if isinstance(m, nn.Embedding):
            if m.max_norm is not None:  # renormalises its rows in place at each lookup
                return super().call_module(m, forward, args, kwargs)
            emb_args = (x, attr("weight"), m.padding_idx)
            return self.create_proxy("call_function", F.embedding, emb_args, {})
        if isinstance(m, nn.Linear):
            return self.create_proxy(
                "call_function", F.linear, (x, attr("weight"), attr("bias")), {}
            )
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                return super().call_module(m, forward, args, kwargs)
            fn = F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d
            conv_args = (x, attr("weight"), attr("bias"), m.stride, m.padding, m.dilation, m.groups)
            return self.create_proxy("call_function", fn, conv_args, {})
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if m.training or m.running_mean is None:
                return super().call_module(m, forward, args, kwargs)
            bn_args = (
                x,
                attr("running_mean"),
                attr("running_var"),
                attr("weight"),
                attr("bias"),
                False,
                0.0,
                m.eps,
            )
            return self.create_proxy("call_function", F.batch_norm, bn_args, {})
        if isinstance(m, nn.GroupNorm):
            gn_args = (x, m.num_groups, attr("weight"), attr("bias"), m.eps)
            return self.create_proxy("call_function", F.group_norm, gn_args, {})
        if isinstance(m, nn.RMSNorm):
            rms_args = (x, tuple(m.normalized_shape), attr("weight"), m.eps)
            return self.create_proxy("call_function", F.rms_norm, rms_args, {})
        ln_args = (x, tuple(m.normalized_shape), attr("weight"), attr("bias"), m.eps)
        return self.create_proxy("call_function", F.layer_norm, ln_args, {})


def trace(
    module: nn.Module,
    input_names: list[str],
    example: dict[str, torch.Tensor] | None = None,
    model_output: str | None = None,
) -> torch.fx.GraphModule:
    """torch.fx symbolic trace, or torch.export on `example` where fx cannot follow the model
    (transformers); an uncapturable model gets the offending op and the way out."""
    if isinstance(module, torch.fx.GraphModule) and is_aten_graph(module):
        return lower_aten(module)
    if isinstance(module, torch.fx.GraphModule) and not _has_modules_to_open(module):
        return module
    module.eval()
    if example is not None and (prefers_export(module) or model_output is not None):
        return capture(module, example, input_names, model_output)  # it reads the output tree
    try:
        graph = _Tracer().trace(module, concrete_args=None)
    except Exception as exc:
        if example is not None:
            return capture(module, example, input_names, model_output)
        where = _describe_trace_failure(exc)
        raise LegocError(
            f"torch.fx cannot trace the model: {where}; remove data-dependent Python control "
            "flow from forward (or move that part into a function marked with torch.fx.wrap)"
        ) from None
    gm = torch.fx.GraphModule(module, graph, class_name=module.__class__.__name__)
    if example is not None and (opaque := wrapped_weight_calls(gm)):
        log.info("weights go into fx-wrapped %s: captured with torch.export", ", ".join(opaque))
        return capture(module, example, input_names, model_output)
    drop_identities(gm)
    gm.graph.eliminate_dead_code()
    fuse_rms_norm(gm)
    gm.recompile()
    if example is not None and (lengths := probed_lengths(module, gm, example, input_names)):
        gm.meta[SEQUENCE] = lengths
    return gm


def _has_modules_to_open(gm: torch.fx.GraphModule) -> bool:
    return any(n.op == "call_module" and _opens(gm.get_submodule(n.target)) for n in gm.graph.nodes)


def _describe_trace_failure(exc: Exception) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    tb = exc.__traceback__
    frame_info = None
    while tb is not None:
        code = tb.tb_frame.f_code
        if "torch/fx" not in code.co_filename and "torch/" not in code.co_filename:
            frame_info = f"{Path(code.co_filename).name}:{tb.tb_lineno} in {code.co_name}"
        tb = tb.tb_next
    return f"{message} (at {frame_info})" if frame_info else message
