"""A small Ray actor pool that survives dying workers (shared by capture and sweeps).

Each actor is built once (it loads the model once) and gets one job at a time; when an actor dies
(killed, crashed, killed by Ray's out-of-memory monitor, node lost) its job goes back to the front of
the queue and a fresh actor replaces it. An exception raised
inside a job is re-raised in the driver as itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from interp.errors import InterpError, MissingDependencyError

log = logging.getLogger(__name__)


class RayConnectError(InterpError, ConnectionError):
    """Ray cannot reach the cluster it was pointed at; the message says what to check or set."""


def connect_error(address: str | None, err: BaseException) -> RayConnectError:
    """What to do when ``ray.init(address=...)`` fails: Ray 2.5x clusters started with ``ray start --head`` turn
    token authentication on, and a driver without ``RAY_AUTH_MODE=token`` is refused with only "Failed to connect".

    Example:
        >>> str(connect_error("10.0.0.5:6379", ConnectionError("Failed to connect to Ray cluster")))[:60]
        'cannot connect to the Ray cluster at 10.0.0.5:6379 (Failed t'
    """
    where = address or os.environ.get("RAY_ADDRESS") or "the default address"
    chain: list[str] = []
    e: BaseException | None = err
    while e is not None and len(chain) < 5:
        chain.append(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        e = e.__cause__ or e.__context__
    why = "; ".join(dict.fromkeys(chain))
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "token":
        fix = ("RAY_AUTH_MODE=token is set: check that this machine has the head node's token (~/.ray/auth_token, "
               "or RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH), and that the address is right (`ray status` on the head)")
    else:
        fix = ("clusters started with `ray start --head` (Ray >= 2.5x) require token authentication: set "
               "RAY_AUTH_MODE=token in this environment (the token is read from ~/.ray/auth_token, written by "
               "`ray start --head`; or set RAY_AUTH_TOKEN), and check the address with `ray status` on the head node")
    return RayConnectError(f"cannot connect to the Ray cluster at {where} ({why}); {fix}")


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
        RayConnectError: ``ray.init`` cannot reach the cluster at ``address`` / ``RAY_ADDRESS``.
        MissingDependencyError: Ray is not installed.
    """
    try:
        import ray
        from ray.exceptions import NodeDiedError, OutOfMemoryError, RayActorError, RayTaskError, WorkerCrashedError
    except ImportError as e:  # pragma: no cover - the [distributed] extra is missing
        raise MissingDependencyError("ray", "distributed", "backend='ray'") from e
    if not jobs:
        return 0
    lost = (RayActorError, OutOfMemoryError, WorkerCrashedError, NodeDiedError)  # the worker, not the job, failed
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError) as e:
            if address is None and not os.environ.get("RAY_ADDRESS"):
                raise  # starting a local Ray failed: not a connection problem
            raise connect_error(address, e) from e
    actor_cls: Any = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(cls)
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
