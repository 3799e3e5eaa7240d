"""Shared test helpers: CLI error assertions and float tolerances. The tiny models and task
folders live in `legoc.testing` (benchmarks use them too) and are re-exported here."""

from __future__ import annotations

import torch

from legoc.testing import (  # noqa: F401 - the tiny models, re-exported for the tests
    ARCH,
    FACTORIES,
    INPUT_SHAPES,
    N_OUTPUTS,
    PlantedRedundant,
    TinyMLP,
    TinyResCNN,
    labelled_data,
    make_planted,
    make_tiny_cnn,
    make_tiny_mlp,
    make_wide_mlp,
    synthetic_task,
    trained_model,
    trained_state,
    write_task,
)


def error_lines(result) -> list[str]:
    """A command's stderr without its progress status lines (`legoc: <phase> ...`, printed
    off a terminal as phases end)."""
    return [line for line in result.stderr.strip().splitlines() if not line.startswith("legoc: ")]


def assert_one_error_line(result, needles: tuple[str, ...], exit_code: int = 2) -> None:
    """A CLI refusal: the exit code, no traceback, exactly one `error:` line naming `needles`
    (after the status lines of the phases that ended before it)."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), f"unhandled: {result.exception!r}"
    assert "Traceback" not in result.output
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def float_steps(*compared, steps: int = 16, dtype: torch.dtype = torch.float32) -> float:
    """An absolute tolerance of `steps` float steps of `dtype` at the largest magnitude compared.

    Two float32 computations of one quantity that sum in another order (batch sizes, fused
    kernels, AVX-512 vs AVX2 vs scalar dispatch) differ by a few steps *at the values' scale*:
    a fixed atol such as 1e-6 is half a step at 35 and passes on one CPU only."""
    scale = max(float(torch.as_tensor(v).detach().double().abs().max()) for v in compared)
    return steps * torch.finfo(dtype).eps * max(scale, 1.0)


def assert_float_close(actual, expected, steps: int = 16) -> None:
    """`actual` equals `expected` within `steps` float32 steps at their magnitude (float_steps)."""
    actual, expected = torch.as_tensor(actual).detach(), torch.as_tensor(expected).detach()
    atol = float_steps(actual, expected, steps=steps)
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol, rtol=0)


def make_search_fall_short(monkeypatch) -> None:
    """Every search ends below the spec's keep (its best faithfulness is keep / 2), so a run
    meets the task-not-met path (exit 1): with keep in (0, 1] the kept-everything rationale
    always reaches it otherwise."""
    from dataclasses import replace

    from legoc import api

    searched = api.search_rationale

    def falls_short(prep, *args, **kwargs):
        found = searched(prep, *args, **kwargs)
        return replace(found, faithfulness=prep.task.spec.keep / 2)

    monkeypatch.setattr(api, "search_rationale", falls_short)
