"""Run independent pieces of work (rotation folds, search trials) serially or as Ray tasks.

``ray=None`` runs the calls one after the other in this process. ``ray="local"`` starts
a Ray instance on this machine; any other string is the address of a running cluster
(``ray start --head`` on one machine, ``ray start --address HOST:PORT`` on the others).
Each call becomes one Ray task of ``num_cpus`` CPUs; results come back in call order.

The tasks write into the same run folders a serial run writes, so the folders must be
on storage every node sees (one machine, or a shared file system). Training draws every
random number from the run's seed, so a fold trained in a Ray worker gives the same
weights and predictions as the same fold trained serially.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

LOCAL = "local"


def connect(address: str) -> Any:
    """Initialize Ray for this process (once): a local instance or the cluster at ``address``."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is a dependency
        raise RuntimeError("--ray needs the ray package (pip install 'ray[default]')") from exc
    if not ray.is_initialized():
        ray.init(address="local" if address in (LOCAL, "") else address,  # "local": a new instance, never a cluster found on the machine
                 include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    return ray


def cpus(address: str | None) -> int:
    """CPUs the cluster offers (1 without Ray): how many tasks may usefully run at once."""
    if address is None:
        return 1
    ray = connect(address)
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def map_calls(fn: Callable, calls: Sequence[tuple], *, ray: str | None = None, num_cpus: float = 1) -> list:
    """``[fn(*args) for args in calls]``, serially or as Ray tasks (see the module docstring).

    A task's exception is raised here (the first one, once every task has ended), so a
    failed fold stops the run as it would serially; finished folds stay on disk.
    """
    if ray is None:
        return [fn(*args) for args in calls]
    ray_mod = connect(ray)
    remote = ray_mod.remote(num_cpus=num_cpus, max_retries=0)(fn)
    shared = {}

    def put(value):  # large arguments (the data set) go to the object store once
        if hasattr(value, "signals"):
            if id(value) not in shared:
                shared[id(value)] = ray_mod.put(value)
            return shared[id(value)]
        return value

    refs = [remote.remote(*(put(a) for a in args)) for args in calls]
    results, error = [], None
    for ref in refs:
        try:
            results.append(ray_mod.get(ref))
        except Exception as exc:  # keep waiting for the others so no task is left writing
            error = error or exc
            results.append(None)
    if error is not None:
        cause = getattr(error, "cause", None)
        raise cause if isinstance(cause, Exception) else error
    return results


__all__ = ["LOCAL", "connect", "cpus", "map_calls"]
