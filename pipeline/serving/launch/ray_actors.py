"""The Ray launcher: every process of a run is a Ray actor, pinned to its node and GPU by one
placement group, running the same worker main functions the local launcher's children run.

- Where: each step process is one bundle of the run's placement group. A gpus entry that names a
  node ("node1:0") asks for that node's custom resource `node1` (start the node with
  `ray start --resources '{"node1": 1}'`), so Ray can put it nowhere else; plain ids leave the
  choice to Ray, all on one node (STRICT_PACK) as a local run would be. A bundle takes a share
  of one GPU (1/k for k processes on it); Ray only counts it: actors see every GPU of their node
  (RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES) and use the id the config gives, so `node1:1` is
  GPU 1 of node1, whatever else runs there. The sink and the client run on the main process's
  node (the sink writes into the run folder), and so does the hub (ray_hub.py).
- Queues, flags, heartbeat floats: the hub's (ray_hub.py says why not Ray's queue, nor locks).
- Tensors: every actor joins the run's torch.distributed group (rendezvous on a TCP store the
  main process hosts), so a consumer on another node pulls its items (transport/remote.py);
  processes on one node keep CUDA IPC / memory files.
- Clock: each actor measures its offset to the main process's clock before it starts its work
  (clock_sync.py); the bounds go into the run's metadata.
- Death: each actor's main call is a Ray object; once it is ready the process has ended (its
  exit code), or the actor or its node died (Ray raises an actor error), and dead() says so
  at the orchestrator's next poll. stop() kills every actor, removes the placement group and
  the hub, and shuts down a Ray instance it started, whose session folder was a temporary folder
  of the run (Ray's default, /tmp/ray, would outlive it); a main process killed with -9 leaves
  both to a watcher (ray_reaper.py), and its folder to the next launcher, as a fallback.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

import ray

from pipeline.errors import ConfigError
from pipeline.serving.launch.base import LaunchError, Launcher, Where

NODE_RESOURCE_SHARE = 0.001  # of a node's custom resource, per process: a label, not a limit
CPU_SHARE = 0.01  # Ray's CPU accounting per process: the config decides what runs where
READY_TIMEOUT_S = 120.0  # for the placement group (too few GPUs where asked: say so)
TEMP_PREFIX = "flavr-ray-"
# A local instance's object store: only small messages go through it (tensors cross by CUDA
# IPC, memory files or torch.distributed), and Ray's default (30% of memory, in /dev/shm) is
# more than a container's /dev/shm often holds.
OBJECT_STORE_BYTES = 256 * 2**20
CONNECT_TIMEOUT_S = 10.0  # for a cluster address to accept a connection before Ray is asked


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """LaunchError unless something accepts a connection at a cluster address's host and port:
    Ray itself keeps retrying an address where nothing answers, for many minutes. Addresses
    without a port (`auto`, a cluster found on this machine) are left to Ray."""
    host_port = address.removeprefix("ray://")
    host, sep, port = host_port.rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise LaunchError(f"could not join the Ray cluster at '{address}': nothing accepts "
                          f"connections at {host}:{port} within {timeout_s:g} s ({why})") from None


class _Process:
    """The actor every process of the run is (made with ray.remote in all_started)."""

    def __init__(self, name: str):
        self.name = name

    def pid(self) -> tuple[int, str]:
        """Its process id, and its machine's boot id (whose pids these are)."""
        from pipeline.serving.launch.ray_hub import _boot_id

        return os.getpid(), _boot_id()

    def main(self, hub, store: tuple | None, rank: int, target, args) -> int:
        """Align the clock, join the run's process group, then run the worker's main function
        as a local child would; returns its exit code."""
        from pipeline import clock
        from pipeline.serving.launch.clock_sync import measure_offset
        from pipeline.serving.transport import remote

        os.environ[remote.NODE_ENV] = ray.get_runtime_context().get_node_id()
        offset, bound = measure_offset(hub)
        clock.set_offset(offset)
        hub.clock_report.remote(self.name, offset, bound)
        if store is not None:
            host, port, world = store
            remote.join(host, port, rank, world)
        try:
            target(*args)
        except SystemExit as exc:  # run_child's way to end with a code outside a child
            return exc.code if isinstance(exc.code, int) else 1
        return 0


@dataclass
class _Actor:
    handle: object
    main: object  # the ObjectRef of its main call
    pid: object  # the ObjectRef of its pid
    code: int | None = None  # once ended: its exit code (-9: killed, or its node died)
    cause: str = ""


@dataclass
class _Pending:
    name: str
    role: str
    target: object
    args: tuple
    where: Where | None
    extra: dict = field(default_factory=dict)


class RayLauncher(Launcher):
    """`address`: an existing cluster to join (ray.address / --ray-address); None starts a Ray
    instance on this machine for the run."""

    name = "ray"

    def __init__(self, address: str | None = None):
        self.ray = ray
        self.roles: dict[str, str] = {}
        self.temp_dir: str | None = None
        self.started_ray = False
        self.reaper = None  # watches the instance started here (ray_reaper.py)
        if not ray.is_initialized():
            if address:
                check_reachable(address)
            try:
                if address:
                    ray.init(address=address, include_dashboard=False, configure_logging=False,
                             log_to_driver=True)
                else:
                    self._start_local()
            except Exception as exc:
                self._close_reaper()
                if self.temp_dir is not None:
                    shutil.rmtree(self.temp_dir, ignore_errors=True)
                where = f"join the Ray cluster at '{address}'" if address else "start Ray here"
                raise LaunchError(f"could not {where}: {type(exc).__name__}: {exc}") from None
            self.started_ray = True
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.node_id = ray.get_runtime_context().get_node_id()
        self.here = NodeAffinitySchedulingStrategy(self.node_id, soft=False)
        from pipeline.serving.launch.ray_hub import Hub

        self.hub = ray.remote(Hub).options(num_cpus=0, scheduling_strategy=self.here,
                                           max_concurrency=1000).remote()
        self._ids = 0
        self._pending: list[_Pending] = []
        self.actors: dict[str, _Actor] = {}
        self.pg = None
        self.store = None

    def _start_local(self) -> None:
        """A Ray instance on this machine for the run, its session folder a temporary one."""
        from pipeline.serving.launch.local import remove_stale_temp_dirs

        # Those of main processes killed with -9: only stop() or the watcher removes one.
        remove_stale_temp_dirs("/tmp", TEMP_PREFIX)
        # Unix socket paths are short (108 bytes): under /tmp, not a long TMPDIR.
        self.temp_dir = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir="/tmp")
        if os.path.isdir("/proc"):
            from pipeline.serving.launch.ray_reaper import Reaper, descendants

            self.reaper = Reaper(self.temp_dir, descendants(os.getpid()))
        # address="local": a new instance, never one found running on this machine.
        ray.init(address="local", _temp_dir=self.temp_dir, include_dashboard=False,
                 configure_logging=False, log_to_driver=True,
                 num_cpus=max(4, os.cpu_count() or 1), object_store_memory=OBJECT_STORE_BYTES)
        self._note_processes()

    def _note_processes(self) -> None:
        if self.reaper is not None:
            self.reaper.note_processes()

    def _close_reaper(self) -> None:
        if self.reaper is not None:
            self.reaper.close()
            self.reaper = None

    # -- what the processes share ------------------------------------------------------------
    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def queue(self, maxsize: int = 0):
        from pipeline.serving.launch.ray_hub import HubQueue

        qid = self._next_id()
        self.ray.get(self.hub.new_queue.remote(qid, maxsize))
        return HubQueue(self.hub, qid, maxsize)

    def event(self):
        from pipeline.serving.launch.ray_hub import HubFlag

        return HubFlag(self.hub, self._next_id())

    def shared_floats(self, n: int):
        from pipeline.serving.launch.ray_hub import HubFloats

        index = self._next_id()
        self.ray.get(self.hub.new_floats.remote(index, n))
        return HubFloats(self.hub, index, n)

    # -- starting -----------------------------------------------------------------------------
    def start(self, name: str, role: str, target, *args, where: Where | None = None) -> None:
        """Recorded now, started by all_started(): the placement group needs every bundle."""
        self.roles[name] = role
        self._pending.append(_Pending(name, role, target, args, where))

    def all_started(self) -> None:
        """Reserve the placement group, then start every actor and its main call."""
        ray = self.ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        steps = [p for p in self._pending if p.where is not None]
        per_gpu = Counter((p.where.node, p.where.gpu) for p in steps if p.where.cuda)
        bundles = []
        for p in steps:
            bundle = {"CPU": CPU_SHARE}
            if p.where.cuda:
                bundle["GPU"] = round(1.0 / per_gpu[(p.where.node, p.where.gpu)], 4)
            if p.where.node:
                bundle[p.where.node] = NODE_RESOURCE_SHARE
            bundles.append(bundle)
            p.extra = {"num_cpus": CPU_SHARE, "num_gpus": bundle.get("GPU", 0),
                       "resources": {p.where.node: NODE_RESOURCE_SHARE} if p.where.node else {}}
        missing = self.missing_nodes({p.where.node for p in steps if p.where.node})
        if missing:  # check_nodes found them all before; a node that left since then
            raise LaunchError(missing)
        if bundles:
            named = any(p.where.node for p in steps)
            self.pg = placement_group(bundles, strategy="PACK" if named else "STRICT_PACK",
                                      name=f"flavr-run-{os.getpid()}-{id(self):x}")
            ready, _ = ray.wait([self.pg.ready()], timeout=READY_TIMEOUT_S)
            if not ready:
                raise LaunchError(
                    f"Ray could not place the run's {len(bundles)} processes within "
                    f"{READY_TIMEOUT_S:.0f} s (bundles {bundles}; cluster resources "
                    f"{ray.cluster_resources()}): a named node missing, or too few GPUs")
        self.store = self._store(len(self._pending))
        cls = ray.remote(_Process)
        env = {"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}
        bundle_index = 0
        for rank, p in enumerate(self._pending):
            if p.where is not None:
                strategy = PlacementGroupSchedulingStrategy(self.pg, bundle_index)
                bundle_index += 1
                options = dict(p.extra)
            else:  # the sink and the client: the main process's node
                strategy, options = self.here, {"num_cpus": CPU_SHARE}
            handle = cls.options(name=None, scheduling_strategy=strategy, max_restarts=0,
                                 runtime_env={"env_vars": env}, **options).remote(p.name)
            pid = handle.pid.remote()
            main = handle.main.remote(self.hub, self.store_address, rank, p.target, p.args)
            self.actors[p.name] = _Actor(handle, main, pid)
        self._pending.clear()
        self._note_processes()  # the raylet's agents and workers, started since

    def missing_nodes(self, nodes, offered: dict | None = None) -> str | None:
        """Why no node of the cluster (its resources: `offered`) offers some of `nodes`, or None."""
        offered = self.ray.cluster_resources() if offered is None else offered
        missing = sorted(set(nodes) - set(offered))
        if not missing:
            return None
        custom = sorted(k for k in offered if not k.startswith("node:")
                        and k not in ("CPU", "GPU", "memory", "object_store_memory"))
        return (f"no node of the Ray cluster offers the resource {', '.join(missing)} (start "
                f"the node with ray start --resources '{{\"{missing[0]}\": 100}}'); "
                + (f"the cluster offers: {', '.join(custom)}" if custom
                   else "the cluster's nodes offer no custom resources"))

    def check_nodes(self, nodes: dict[str, str]) -> None:
        offered = self.ray.cluster_resources()  # one call to the cluster for every node
        for node, field_name in nodes.items():
            problem = self.missing_nodes([node], offered)
            if problem:
                raise ConfigError(field_name, f"names node '{node}', but {problem}")

    def _store(self, world: int):
        """The TCP store of the run's process group, on this process (no CUDA needed)."""
        import datetime

        import torch.distributed as dist

        host = self.ray.util.get_node_ip_address()
        store = dist.TCPStore(host, 0, world_size=None, is_master=True, wait_for_workers=False,
                              timeout=datetime.timedelta(seconds=300))
        self.store_address = (host, store.port, world)
        return store

    # -- watching -----------------------------------------------------------------------------
    def dead(self) -> list[tuple[str, str, int]]:
        ray = self.ray
        running = {a.main: n for n, a in self.actors.items() if a.code is None}
        if running:
            ready, _ = ray.wait(list(running), num_returns=len(running), timeout=0)
            for ref in ready:
                actor = self.actors[running[ref]]
                try:
                    actor.code = int(ray.get(ref, timeout=5))
                except ray.exceptions.RayActorError as exc:
                    actor.code, actor.cause = -9, _first_line(exc)
                except Exception as exc:  # its main call raised before the worker body ran
                    actor.code, actor.cause = 1, _first_line(exc)
        return [(n, self.roles[n], a.code) for n, a in self.actors.items() if a.code is not None]

    def cause(self, name: str) -> str:
        """What Ray said about how process `name` ended ('' when it ended on its own)."""
        actor = self.actors.get(name)
        return actor.cause if actor else ""

    def pid(self, name: str) -> int | None:
        actor = self.actors.get(name)
        if actor is None:
            return None
        try:
            return int(self.ray.get(actor.pid, timeout=120)[0])
        except Exception:
            return None

    def kill(self, name: str) -> None:
        actor = self.actors.get(name)
        if actor is not None:
            self.ray.kill(actor.handle, no_restart=True)

    def clock_bounds(self) -> dict[str, float]:
        try:
            reports = self.ray.get(self.hub.clock_reports.remote(), timeout=10)
        except Exception:
            return {}
        return {name: bound for name, (_, bound) in reports.items()}

    # -- the end ------------------------------------------------------------------------------
    def stop(self, grace_s: float = 3.0, pump=None) -> list[str]:
        ray = self.ray
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            self.dead()
            if all(a.code is not None for a in self.actors.values()):
                break
            if pump is not None:
                pump()
            time.sleep(0.1)
        forced = [n for n, a in self.actors.items() if a.code is None]
        for actor in self.actors.values():  # ended or not, an actor lives on until killed
            try:
                ray.kill(actor.handle, no_restart=True)
            except Exception:
                pass
        self._remove_ipc_leftovers()
        if self.pg is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.pg)
        try:
            ray.kill(self.hub, no_restart=True)
        except Exception:
            pass
        self.store = None
        if self.started_ray:
            ray.shutdown()
        self._close_reaper()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        return forced


    def _remove_ipc_leftovers(self) -> None:
        """The CUDA IPC files killed actors on this machine left in /dev/shm (ipc_leftovers.py),
        once they are gone. Actors on other machines: their pids name other processes here."""
        from pipeline.serving.launch.ipc_leftovers import remove_ipc_leftovers
        from pipeline.serving.launch.local import _alive
        from pipeline.serving.launch.ray_hub import _boot_id

        here, pids = _boot_id(), []
        for actor in self.actors.values():
            try:
                pid, boot = self.ray.get(actor.pid, timeout=1)
            except Exception:
                continue
            if boot == here:
                pids.append(pid)
        deadline = time.monotonic() + 3.0
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        remove_ipc_leftovers(p for p in pids if not _alive(p))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
