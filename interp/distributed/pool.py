"""A small Ray actor pool that survives dying workers (shared by capture and sweeps).

Each actor is built once (it loads the model once) and gets one job at a time; when an actor dies
(killed, crashed, killed by Ray's out-of-memory monitor, node lost) its job goes back to the front of
the queue and a fresh actor replaces it. An exception raised
inside a job is re-raised in the driver as itself.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any

log = logging.getLogger("interp.distributed")


def run_pool(cls: type, init_args: tuple[Any, ...], init_kwargs: dict[str, Any], method: str,
             jobs: Sequence[tuple[Hashable, tuple[Any, ...]]], on_result: Callable[[Hashable, Any], None], *,
             workers: int, max_failures: int, address: str | None = None,
             on_ready: Callable[[], None] | None = None) -> int:
    """Run ``cls(*init_args, **init_kwargs).<method>(*args)`` for every ``(key, args)`` job on
    ``workers`` Ray actors; call ``on_result(key, value)`` in the driver as results arrive.

    Starts a local Ray (or connects to ``address`` / ``RAY_ADDRESS``) when Ray is not initialised,
    and shuts it down at the end. ``on_ready()`` is called once the first actors are built (the
    model loaded in each), before any job is sent. Returns the number of actors that died.

    Raises:
        RuntimeError: more than ``max_failures`` actors died.
    """
    try:
        import ray
        from ray.exceptions import NodeDiedError, OutOfMemoryError, RayActorError, RayTaskError, WorkerCrashedError
    except ImportError as e:  # pragma: no cover - the [distributed] extra is missing
        raise ImportError("backend='ray' needs Ray: pip install 'interp[distributed]'") from e
    if not jobs:
        return 0
    lost = (RayActorError, OutOfMemoryError, WorkerCrashedError, NodeDiedError)  # the worker, not the job, failed
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    actor_cls = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(cls)
    queue = deque(jobs)
    idle = [actor_cls.remote(*init_args, **init_kwargs) for _ in range(min(workers, len(jobs)))]
    pending: dict[Any, tuple[Any, tuple[Hashable, tuple[Any, ...]]]] = {}
    failures = 0
    try:
        if on_ready is not None:
            with contextlib.suppress(*lost):  # a worker that failed to start is replaced on its first job
                ray.get([a.pid.remote() for a in idle])
            on_ready()
        while queue or pending:
            while queue and idle:
                actor, job = idle.pop(), queue.popleft()
                pending[getattr(actor, method).remote(*job[1])] = (actor, job)
            ready, _ = ray.wait(list(pending), num_returns=1)
            actor, job = pending.pop(ready[0])
            try:
                value = ray.get(ready[0])
            except lost as e:
                failures += 1
                if failures > max_failures:
                    raise RuntimeError(f"{failures} workers died (the last on job {job[0]!r}: {e}); giving up. "
                                       "Re-run the same call to resume.") from e
                why = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")[:300]
                log.warning("worker died on job %r (%s: %s); job re-queued, worker replaced", job[0],
                            type(e).__name__, why)
                queue.appendleft(job)
                ray.kill(actor, no_restart=True)
                idle.append(actor_cls.remote(*init_args, **init_kwargs))
                continue
            except RayTaskError as e:  # an error inside the job: raise it as itself
                raise e.as_instanceof_cause() from None
            on_result(job[0], value)
            idle.append(actor)
    finally:
        for a in [*idle, *(a for a, _ in pending.values())]:
            ray.kill(a, no_restart=True)
        if started:
            ray.shutdown()
    return failures
