"""`legoc compare --ray`: each (variant, seed) chain of runs (B, C from B, A sized to B, at every
keep level) as one Ray task.

A task prepares the model and task from the same files the driver read, rebuilds the variants
the same way and runs the same code as a local compare, writing its blocks into the driver's
staging folder (a local cluster shares the file system). Chains are independent, so the runs,
and the report built from them in order, are those of a local compare; only the wall times
differ.
"""

from __future__ import annotations

from legoc.scoring.remote import connect


def calls_on_ray(address: str, function, calls: list[tuple]) -> list:
    """`function(*args)` for each `args` in `calls`, computed as Ray tasks; the results in
    the order of `calls`. `function` is passed in (compare's), so this module does not import
    the one that imports it."""
    ray = connect(address, min(len(calls), 2))
    task = ray.remote(num_cpus=1, max_retries=2)(function)
    return ray.get([task.remote(*args) for args in calls])
