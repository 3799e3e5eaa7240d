"""A Hugging Face model folder (what `save_pretrained` writes: config.json + *.safetensors, and
often a tokenizer) loaded as MODEL, with no factory file (DESIGN §3.1, the folder form).

Safe loading only: weights from safetensors, never from pickled `.bin` files; code shipped with
the folder (`auto_map`, remote code) runs only with `trust_model`. The class is the config's
`architectures[0]` unless `hf_class` names one (`AutoModelForSequenceClassification`, ...)."""

from __future__ import annotations

import hashlib
import inspect
import logging
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from legoc.errors import LegocError
from legoc.runtime.files import sha256_file

log = logging.getLogger(__name__)

# the inputs a folder's model reads when it has no tokenizer to say (forward arguments)
DEFAULT_INPUTS = ("input_ids", "attention_mask")
SEGMENTS = "token_type_ids"  # which text of a pair a token belongs to
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")


@dataclass(frozen=True)
class HFModel:
    module: nn.Module
    sha256: str
    input_names: list[str]
    tokenizer: object | None  # a transformers tokenizer: encodes .jsonl text splits


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def folder_sha256(path: Path) -> str:
    """One hash over the folder's files (names and contents), in name order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.iterdir() if p.is_file()):
        digest.update(f"{file.name}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def load_hf_folder(path: Path, hf_class: str | None, trust_model: bool) -> HFModel:
    """The folder's model in eval mode, its input names and its tokenizer (if it has one)."""
    try:
        import transformers
    except ImportError:
        raise LegocError(
            f"{path} is a Hugging Face model folder; loading it needs transformers "
            "(pip install transformers)"
        ) from None
    if not any(path.glob("*.safetensors")):
        raise LegocError(
            f"{path}: no *.safetensors weights; legoc loads safetensors only (a .bin file is a "
            "pickle): re-save with model.save_pretrained(folder) (safetensors is its default)"
        )
    try:
        config = transformers.AutoConfig.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=trust_model
        )
    except Exception as exc:
        remote = "trust_remote_code" in str(exc) or "custom code" in str(exc)
        why = "its config needs code shipped with the folder; pass --trust-model" if remote else exc
        raise LegocError(f"{path}/config.json: cannot be read ({why})") from None
    name = hf_class or next(iter(getattr(config, "architectures", None) or []), None)
    if name is None:
        raise LegocError(
            f"{path}/config.json names no `architectures`; pass --hf-class with a transformers "
            "class, e.g. --hf-class AutoModelForSequenceClassification"
        )
    cls = getattr(transformers, name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise LegocError(
            f"{'--hf-class' if hf_class else 'config.json architectures'}: {name!r} is not a "
            "transformers model class; name one such as AutoModelForSequenceClassification"
        )
    kwargs = {"trust_remote_code": trust_model} if name.startswith("Auto") else {}
    transformers.utils.logging.disable_progress_bar()  # legoc reports its own phases
    try:
        module = cls.from_pretrained(
            str(path), use_safetensors=True, local_files_only=True, **kwargs
        )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LegocError(f"{path}: cannot load the model as {name} ({first})") from None
    if not isinstance(module, nn.Module):
        raise LegocError(f"{path}: {name} did not build an nn.Module")
    module.eval()
    tokenizer = _tokenizer(path, trust_model)
    return HFModel(module, folder_sha256(path), _input_names(module, tokenizer), tokenizer)


def _tokenizer(path: Path, trust_model: bool):
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=trust_model
        )
    except Exception as exc:  # the model still loads; text splits will say what is missing
        log.debug("no tokenizer from %s: %s", path, exc)
        return None


def _input_names(module: nn.Module, tokenizer) -> list[str]:
    """The tokenizer's inputs (else input_ids and attention_mask) that forward accepts, but
    token_type_ids: all zeros for single texts, which is forward's own default (a block does
    not read it; text pairs add it back, `with_segments`)."""
    wanted = getattr(tokenizer, "model_input_names", None) or DEFAULT_INPUTS
    accepted = inspect.signature(module.forward).parameters
    names = [name for name in wanted if name in accepted and name != SEGMENTS]
    if "input_ids" not in names:
        raise LegocError(f"{type(module).__name__}.forward takes no input_ids: not a text model")
    return names


def with_segments(module: nn.Module, input_names: list[str]) -> list[str]:
    """The input names for text pairs: token_type_ids too, where forward takes it."""
    if SEGMENTS in inspect.signature(module.forward).parameters:
        return [*input_names, SEGMENTS]
    return input_names
