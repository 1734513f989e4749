"""Who runs where and which queue connects them, derived from a validated config (pure data).

Step i's input queue placement is step i-1's `queue` setting; the client feeds the decode step
through one global queue and the last step feeds the single sink through one global queue.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.analysis.records import SINK
from pipeline.config.schema import split_gpu
from pipeline.serving.transport.queues import GLOBAL, queue_name


@dataclass(frozen=True)
class Replica:
    step: str
    kind: str
    index: int  # replica number within its step
    gpu: int  # GPU id (a logical device id in CPU mode), on its node
    node: str | None = None  # the node the config names (Ray launcher); None: the launcher's

    @property
    def key(self):
        """Its GPU as per-GPU queues know it: the id, or "node:id" where the config names nodes
        (GPU 0 of two nodes are two GPUs)."""
        return self.gpu if self.node is None else f"{self.node}:{self.gpu}"

    @property
    def name(self) -> str:
        where = f"{self.node}.gpu{self.gpu}" if self.node else f"gpu{self.gpu}"
        return f"{self.step}[{self.index}]@{where}"


@dataclass
class Topology:
    step_names: list[str]
    kinds: list[str]
    replicas: list[list[Replica]]
    input_per_gpu: list[bool]  # per step index, plus one entry for the sink at the end

    @classmethod
    def from_config(cls, cfg) -> "Topology":
        """The config's processes and queues; `-p` is applied to cfg by config.validate."""
        names = [s.name for s in cfg.steps]
        kinds = [s.kind for s in cfg.steps]
        replicas = [[Replica(s.name, s.kind, r, *reversed(split_gpu(g)))
                     for r, g in enumerate(s.gpus)] for s in cfg.steps]
        per_gpu = [False]
        for s in cfg.steps[:-1]:
            per_gpu.append(s.queue == "per_gpu")
        per_gpu.append(False)  # the sink
        return cls(names, kinds, replicas, per_gpu)

    @property
    def n_steps(self) -> int:
        return len(self.step_names)

    def consumer_name(self, step_index: int) -> str:
        return SINK if step_index == self.n_steps else self.step_names[step_index]

    def input_keys(self, step_index: int) -> list:
        """Keys of the queues feeding step `step_index` (n_steps = the sink)."""
        if not self.input_per_gpu[step_index]:
            return [GLOBAL]
        return sorted({r.key for r in self.replicas[step_index]}, key=str)

    def input_key(self, step_index: int, key):
        """The queue a replica of `step_index` with GPU `key` (Replica.key) reads."""
        return key if self.input_per_gpu[step_index] else GLOBAL

    def queue_names(self, step_index: int) -> dict:
        name = self.consumer_name(step_index)
        return {k: queue_name(name, k) for k in self.input_keys(step_index)}

    def producers_for(self, step_index: int, key) -> list[Replica]:
        """Replicas of the previous step whose items can reach a consumer of `step_index` on the
        GPU `key` (Replica.key)."""
        if step_index == 0:
            return []
        ups = self.replicas[step_index - 1]
        if self.input_per_gpu[step_index] and key is not None:
            return [r for r in ups if r.key == key]
        return list(ups)

    def gpus(self) -> list[int]:
        return sorted({r.gpu for step in self.replicas for r in step})

    @property
    def named_nodes(self) -> bool:
        """Some replica runs on a node the config names (not on this machine's GPU ids)."""
        return any(r.node for step in self.replicas for r in step)
