"""`legoc compare --ray`: each seed's runs (B, C from B, A sized to B) as one Ray task.

A task prepares the model and task from the same files the driver read and runs the same code
as a local compare (`_seed_runs`), writing its blocks into the driver's staging folder (a local
cluster shares the file system). Seeds are independent, so the runs, and the report built from
them in seed order, are those of a local compare; only the wall times differ.
"""

from __future__ import annotations

from pathlib import Path

from legoc.scoring.remote import connect


def seed_runs_on_ray(
    address: str, load: dict, staging: Path, seeds: list[int], args: dict, seed_runs, steps
):
    """The runs of every seed, in seed order, computed as Ray tasks; `load` holds prepare's
    arguments, `args` the rest of `seed_runs`'s (compare's `_seed_runs`, with its `_Steps`:
    passed in, so this module does not import the one that imports it)."""
    ray = connect(address, min(len(seeds), 2))
    task = ray.remote(num_cpus=1, max_retries=2)(_one_seed)
    refs = [task.remote(load, str(staging), seed, args, seed_runs, steps) for seed in seeds]
    return [run for runs in ray.get(refs) for run in runs]


def _one_seed(load: dict, staging: str, seed: int, args: dict, seed_runs, steps):
    from legoc import api

    prep = api.prepare(**load)
    references = {
        name: prep.scorer_for(name).reference.outputs
        for name in prep.splits
        if prep.metric.needs_reference
    }
    step = steps(None, 3)
    return seed_runs(
        prep,
        Path(staging),
        seed,
        args["method"],
        args["budget"],
        args["finetune"],
        args["inputs"],
        args["family"],
        references,
        step,
        args["epochs"],
        args["lr"],
    )
