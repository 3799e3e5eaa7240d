"""Ops that read only their input's shape (size, dim, .shape): they carry no units and leave
the units they read alone."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.fx import Node

if TYPE_CHECKING:
    from legoc.ir.analysis import Propagation


def size(walk: Propagation, node: Node, tracked: list[Node]) -> None:
    return None
