"""Blocks without torch: load, run, compose, deploy, catalogue and describe ONNX blocks.

Imports only onnx, onnxruntime and numpy (DESIGN §4). A few commands use more, imported when
they run: specs need yaml, cards need matplotlib, and reading a torch `.pt` data file needs
torch (`.npz` never does).
"""

from legoc.runtime.block import Block, TensorInfo
from legoc.runtime.card import write_card
from legoc.runtime.catalog import Catalog, Entry
from legoc.runtime.compose import (
    Composition,
    compose_files,
    compose_parallel,
    compose_sequential,
)
from legoc.runtime.data import read_arrays
from legoc.runtime.deploy import TARGETS, DeployReport, deploy
from legoc.runtime.run import run_file

__all__ = [
    "TARGETS",
    "Block",
    "Catalog",
    "Composition",
    "DeployReport",
    "Entry",
    "TensorInfo",
    "compose_files",
    "compose_parallel",
    "compose_sequential",
    "deploy",
    "read_arrays",
    "run_file",
    "write_card",
]
