"""The Ray engine's plan without GPUs: one operator (every stage fused) in a pool of plain Ray actors, which
the driver feeds one shard at a time; a lost or faulted actor's shard goes back to the queue.

    shard names --[read, noun chunks, ground, expand, write parts] x one actor per CPU--> PartInfo rows

The pool has one actor per CPU of the cluster (not more than the shards to do, nor than its memory holds at
``ray_operators.ACTOR_MEMORY_BYTES`` each: ``ray_operators.fused_pool``). Image bytes never enter Ray's
object store: each actor reads its shard and writes its parts itself.
"""
from __future__ import annotations

import contextlib
import sys
from collections import deque
from typing import TYPE_CHECKING, Any, Iterator

from .config import PipelineConfig
from .ray_operators import Operator, actor_class, fault_line, machine_fault, placement

if TYPE_CHECKING:
    from .api import ShardJob


def run_fused(config: PipelineConfig, job: ShardJob, operator: Operator, todo: list[str], pool: int,
              actor_cpus: float) -> Iterator[dict[str, Any]]:
    """The one-operator plan: a queue of shards, one at a time per actor; yields every part's ``PartInfo``.

    An actor that dies (its node lost, its process killed) or stops a shard on a fault of the machine
    (``faults.SystemicFault``: a CUDA error, a hung detector call; or storage that kept failing) gives its
    shard back to the queue: the actor is killed and a fresh one takes its place, at most
    ``config.max_actor_replacements`` times per run (then the run stops with the last fault). The parts it
    wrote are either accepted already (a retry's copies of the same keys are then refused by the ledger) or
    never seen (the retry's are accepted). Each ``PartInfo`` carries its actor under "actor", so the shard's
    commit can run there (before the actor's next shard: Ray runs one caller's calls to an actor in order)."""
    import ray
    from ray.exceptions import ActorDiedError, ActorUnavailableError, ObjectLostError, OwnerDiedError, RayTaskError

    lost = (ActorDiedError, ActorUnavailableError, ObjectLostError, OwnerDiedError)
    worker = ray.remote(actor_class(operator)).options(max_restarts=0, max_task_retries=0,
                                                      **placement(config, actor_cpus))
    sink_url = job.sink.folder.url

    def new_actor():
        return worker.remote(operator, config, job.source, sink_url)

    actors = [new_actor() for _ in range(pool)]
    replacements_left = config.max_actor_replacements
    queue = deque(todo)
    running: dict[Any, tuple[Any, str]] = {}  # streaming generator -> (actor, shard)

    def start(actor) -> None:
        shard = queue.popleft()
        running[actor.run_shard.options(num_returns="streaming").remote(shard)] = (actor, shard)

    for actor in actors[:len(queue)]:
        start(actor)
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        for generator in ready:
            actor, shard = running[generator]
            try:
                infos = ray.get(next(generator))
            except StopIteration:
                del running[generator]
                if queue:
                    start(actor)
                continue
            except (*lost, RayTaskError) as error:
                if isinstance(error, RayTaskError) and not machine_fault(error):
                    raise  # a bug or a refusal of the stages: the run stops with it
                del running[generator]
                actors.remove(actor)
                queue.appendleft(shard)
                what = "was lost" if isinstance(error, lost) else "stopped on a fault of the machine"
                fault = fault_line(error)
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)  # (a hung detector call dies with its process)
                if replacements_left > 0:
                    replacements_left -= 1
                    actors.append(new_actor())
                    job.summary.actors_replaced += 1
                elif not actors:
                    from grit_pipeline.faults import SystemicFault

                    stop = SystemicFault(f"every Ray actor was lost or stopped by a fault and "
                                         f"--max-actor-replacements {config.max_actor_replacements} are used up; "
                                         f"last: {fault}")
                    stop.shard = shard
                    raise stop from error
                print(f"[grit] a Ray actor {what} on shard {shard} ({fault}); the shard goes to another actor"
                      f" ({replacements_left} replacement(s) left)", file=sys.stderr, flush=True)
                busy = {a for a, _ in running.values()}
                for other in [a for a in actors if a not in busy][:len(queue)]:
                    start(other)
                continue
            for info in infos:
                yield info | {"actor": actor}
