"""Slot hand-off between nodes: a consumer pulls an item's tensors from its producer over
torch.distributed (gloo for host tensors, NCCL between GPUs).

Within a node slots stay where they are (CUDA IPC, memory files: slots.py). Across nodes neither
works, so the run's processes form one torch.distributed process group (the Ray launcher joins
every actor to it at start-up, rendezvous through a TCP store on the main process's node) and a
consumer *pulls*: the replica that dequeued an item sends its producer a small request (pool,
slot, how many elements of each buffer), the producer's pull-server thread answers with a header
and sends the buffers group by group, each group as soon as the producer's event for it has
completed (as the local peer copies do: a split's early stages cross while the producer still
computes its later ones); the consumer receives them into buffers of its own, one set per producer
slot (a producer slot is not handed out again before this consumer gives it back, so its mirror
is free whenever it arrives again). Point-to-point needs matched send/recv: the pull makes the
consumer known before anything is sent, whatever replica of a global queue took the item.

Why torch.distributed, not Ray's own channels or object store:
- the object store copies GPU tensors through host memory (device -> host -> plasma -> host ->
  device); the pipeline's rule is that tensors between steps never round-trip through the host;
- Ray's compiled-graph NCCL channels need the whole pipeline expressed as a static Ray DAG of
  actor methods, which the workers (their own loops, batching, queues) are not, and a second
  code path for workers; Ray's collective library wraps the same NCCL calls torch makes with
  a group API of its own, and adds nothing the workers need;
- torch.distributed's send/recv are already in the workers' torch, pick NCCL or gloo per tensor
  device from one group ("cpu:gloo,cuda:nccl"), and receive into preallocated buffers.
Measured on the CPU (2-core CI machine, two Ray nodes on one host, scripts/ray_transport_bench.py):
gloo send/recv moved 0.25 to 16 MB 3 to 7 times faster than the object store (2.1 ms against
7.0 ms for 0.25 MB, 13 ms against 91 ms for 16 MB); docs/ray.md has the table.

Timing, as for peer copies: `copy` is the time the transfers kept the link busy; `exposed` runs
from the moment the consumer could have started (the producer's data ready *and* the consumer
free) to the last byte. On a GPU the receives run on a stream of their own, so they overlap the
consumer's earlier work. A receive posted before its data is ready waits inside NCCL, which is
neither link time nor hand-off: so before each group's buffers the producer sends a one-byte
marker once that group is ready, and the consumer's clock for the group starts when the marker
lands. copy = the sum over groups of marker landed -> group landed; exposed = last byte - max
(consumer free, last group's marker landed), from CUDA events on the consumer's GPU. (An earlier
group still in flight when the last one is ready is inside neither: the early groups are the
large ones and cross during the producer's later stages.) On the CPU, where the producer's
writes are complete when it serves, a header says when the data was ready and the consumer is
free when it asks; exposed = landed - max(asked, producer's data ready).
"""
from __future__ import annotations

import datetime
import os
import sys
import threading

import torch

from pipeline.clock import now
from pipeline.switches import env_choice

NODE_ENV = "FLAVR_NODE"  # set by a launcher whose processes may live on several nodes
NCCL_PRIORITY_ENV = "FLAVR_NCCL_PRIORITY"  # high (default) | normal: NCCL's streams' priority
LOCAL_NODE = "local"

_REQUEST_TAG, _HEADER_TAG, _DATA_TAG = 71, 72, 73  # gloo tags; NCCL orders per pair instead
_MAX_NAMES = 60
_REQUEST_LEN = 4 + _MAX_NAMES  # pool key, slot, wants cuda, number of names, elements per name


def current_node() -> str:
    """The node this process runs on, as the launcher named it (one name for a local run)."""
    return os.environ.get(NODE_ENV, LOCAL_NODE)


def join(store_host: str, store_port: int, rank: int, world_size: int,
         timeout_s: float = 300.0) -> None:
    """Join the run's process group (every process of the run calls this once, at start-up).
    The TCP store is hosted by the main process; gloo always, NCCL for CUDA tensors when this
    process sees a GPU (its communicators are made lazily, per pair, on first use)."""
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=timeout_s)
    store = dist.TCPStore(store_host, store_port, world_size=None, is_master=False,
                          timeout=timeout)
    backend, options = "gloo", None
    if torch.cuda.is_available():
        backend, options = "cpu:gloo,cuda:nccl", _nccl_options(timeout)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                            timeout=timeout, pg_options=options)


def _nccl_options(timeout: datetime.timedelta):
    """NCCL's streams at high priority, unless FLAVR_NCCL_PRIORITY=normal. NCCL's sends and
    receives are kernels: at normal priority the GPU schedules their blocks behind the pending
    blocks of the step's model kernels on the same GPU (a split's encoder keeps its GPU ~96%
    busy), which slows the transfers the consumer then waits for. (Gloo takes no options.)"""
    priority = env_choice(NCCL_PRIORITY_ENV, ("high", "normal"))
    from torch.distributed import ProcessGroupNCCL

    options = ProcessGroupNCCL.Options(is_high_priority_stream=priority == "high")
    options._timeout = timeout  # the group's timeout, said once
    return options


def _joined() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


# -- the producer's side ----------------------------------------------------------------------

_pools: list = []  # this process's pools, by serve key
_server: threading.Thread | None = None


def serve(pool) -> tuple[int | None, int | None]:
    """Make `pool` reachable from other nodes: (this process's rank, the pool's key), or
    (None, None) when the run has no process group (one node: nothing to serve)."""
    global _server
    if not _joined():
        return None, None
    import torch.distributed as dist

    if pool not in _pools:
        _pools.append(pool)
    if _server is None:
        _server = threading.Thread(target=_serve_forever, name="pull-server", daemon=True)
        _server.start()
    return dist.get_rank(), _pools.index(pool)


def _serve_forever() -> None:
    """Answer pulls one at a time, from any rank. A daemon: it ends with its process (a pull
    that is never answered belongs to a run that is already ending)."""
    import torch.distributed as dist

    request = torch.zeros(_REQUEST_LEN, dtype=torch.int64)
    send_stream = None
    try:
        while True:
            asker = dist.recv(request, src=None, tag=_REQUEST_TAG)
            key, slot, wants_cuda, n = (int(v) for v in request[:4])
            pool = _pools[key]
            counts = dict(zip(_names(pool.groups), request[4:4 + n].tolist()))
            if pool.is_cuda and wants_cuda:
                if send_stream is None:
                    torch.cuda.set_device(pool.device)  # the current device is per thread
                    send_stream = torch.cuda.Stream(pool.device)
                    marker = torch.ones(1, dtype=torch.uint8, device=pool.device)
                dist.send(torch.tensor([now()], dtype=torch.float64), dst=asker, tag=_HEADER_TAG)
                for g, names in enumerate(pool.groups):
                    pool.events[slot][g].synchronize()  # this group's writes are done
                    with torch.cuda.stream(send_stream):
                        dist.send(marker, dst=asker)
                        for name in names:
                            if counts[name]:
                                dist.send(pool.slots[slot][name][:counts[name]], dst=asker)
                continue
            if pool.is_cuda:  # to a CPU consumer, through host memory
                pool.events[slot][-1].synchronize()
            dist.send(torch.tensor([now()], dtype=torch.float64), dst=asker, tag=_HEADER_TAG)
            for name in _names(pool.groups):
                if counts[name]:
                    flat = pool.slots[slot][name][:counts[name]]
                    dist.send(flat.cpu() if pool.is_cuda else flat, dst=asker, tag=_DATA_TAG)
    except Exception as exc:  # a peer gone: the launcher names the dead process
        print(f"pull server of rank {dist.get_rank()} stopped: {type(exc).__name__}: {exc}",
              file=sys.stderr)


def _names(groups) -> list[str]:
    """Tensor names in the order they cross: group by group, as the producer writes them."""
    return [name for group in groups for name in group]


# -- the consumer's side ----------------------------------------------------------------------

def _extent(shape, stride) -> int:
    """Elements of a flat buffer that a strided view of `shape` reaches."""
    if any(d == 0 for d in shape):
        return 0
    return 1 + sum((d - 1) * s for d, s in zip(shape, stride))


class HostSpan:
    """A measured span in seconds (the CPU path's copy and exposed times)."""

    def __init__(self, seconds: float):
        self._s = max(0.0, seconds)

    def seconds(self) -> float:
        return self._s


class LaterStart:
    """end - max(free, start) on one GPU: the part of a receive the consumer waited for."""

    def __init__(self, free, start, end):
        self.free, self.start, self.end = free, start, end

    def seconds(self) -> float:
        waited = min(self.free.elapsed_time(self.end), self.start.elapsed_time(self.end))
        return max(0.0, waited) / 1000.0


class RemotePoolReader:
    """Consumer side of a pool on another node (the same methods as slots.PoolReader)."""

    remote = True
    same_device = False

    def __init__(self, handle, free_queue, device: torch.device):
        if handle.rank is None:
            raise RuntimeError(
                f"pool '{handle.pool_id}' is on node '{handle.node}' and this process on "
                f"'{current_node()}', but the run has no process group to pull it through")
        if not _joined():
            raise RuntimeError(f"pool '{handle.pool_id}' is on another node, and this process "
                               "has not joined the run's process group")
        self.pool_id = handle.pool_id
        self.rank, self.key = handle.rank, handle.serve_key
        self.specs = handle.specs
        self.groups = [tuple(g) for g in handle.groups]
        self.names = _names(self.groups)
        if len(self.names) > _MAX_NAMES:
            raise ValueError(f"pool '{handle.pool_id}' has {len(self.names)} tensors; a pull "
                             f"names at most {_MAX_NAMES}")
        self.src_device = torch.device(handle.device)
        self.free_queue = free_queue
        # NCCL moves GPU to GPU; a CPU consumer (the sink) gets host tensors over gloo.
        self.device = device
        self.cuda = device.type == "cuda" and self.src_device.type == "cuda"
        self.mirrors: dict[int, dict[str, torch.Tensor]] = {}  # producer slot -> own buffers
        self.marker = torch.empty(1, dtype=torch.uint8, device=device) if self.cuda else None

    def _mirror(self, slot: int) -> dict[str, torch.Tensor]:
        if slot not in self.mirrors:
            device = self.device if self.cuda else torch.device("cpu")
            self.mirrors[slot] = {k: torch.empty(n, dtype=dt, device=device)
                                  for k, (n, dt) in self.specs.items()}
        return self.mirrors[slot]

    def _ask(self, item) -> float:
        """Send the pull request; return when the producer's data was ready (run clock)."""
        import torch.distributed as dist

        counts = [_extent(*item.layout[k]) if k in item.layout else 0 for k in self.names]
        request = torch.zeros(_REQUEST_LEN, dtype=torch.int64)
        request[:4] = torch.tensor([self.key, item.slot, int(self.cuda), len(counts)])
        request[4:4 + len(counts)] = torch.tensor(counts, dtype=torch.int64)
        dist.send(request, dst=self.rank, tag=_REQUEST_TAG)
        header = torch.zeros(1, dtype=torch.float64)
        dist.recv(header, src=self.rank, tag=_HEADER_TAG)
        self._counts = counts
        return float(header[0])

    def _receive_into(self, buffers) -> list:
        """Receive every buffer, group by group; on a GPU (call with the receive stream
        current) each group after its marker, returning (marker landed, group landed) CUDA
        event pairs per group."""
        import torch.distributed as dist

        counts = dict(zip(self.names, self._counts))
        if not self.cuda:
            for name in self.names:
                if counts[name]:
                    dist.recv(buffers[name][:counts[name]], src=self.rank, tag=_DATA_TAG)
            return []
        spans = []
        for names in self.groups:
            dist.recv(self.marker, src=self.rank)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for name in names:
                if counts[name]:
                    dist.recv(buffers[name][:counts[name]], src=self.rank)
            end.record()
            spans.append((start, end))
        return spans

    def receive(self, item, stream, recv_stream):
        """Pull `item` onto this consumer: (tensors, copy timers, exposed timer, landed event or
        None). On a GPU the receives are queued on `recv_stream` and `stream` waits for them;
        call with `stream` current."""
        buffers = self._mirror(item.slot)
        if self.cuda:
            free = torch.cuda.Event(enable_timing=True)
            free.record(stream)  # where the consumer's own work stands
            self._ask(item)
            with torch.cuda.stream(recv_stream):
                copies = self._receive_into(buffers)
            last_start, end = copies[-1]
            stream.wait_event(end)
            exposed, landed = LaterStart(free, last_start, end), end
        else:
            asked = now()  # a CPU consumer computes synchronously: it is free now
            ready = self._ask(item)
            began = now()
            self._receive_into(buffers)
            done = now()
            copies, exposed = [HostSpan(done - began)], HostSpan(done - max(asked, ready))
            landed = None
        views = {k: buffers[k].as_strided(*item.layout[k]) for k in item.layout}
        return views, copies, exposed, landed

    def tensors(self, item) -> dict[str, torch.Tensor]:
        """The item's tensors on this process (pulled now, on the host)."""
        self._ask(item)
        buffers = self._mirror(item.slot)
        self._receive_into(buffers)
        if self.cuda:
            torch.cuda.current_stream(self.device).synchronize()
        return {k: buffers[k].as_strided(*item.layout[k]) for k in item.layout}

    def wait_host(self, slot: int) -> None:
        """Nothing to wait for: tensors() returns once the data has landed."""

    def release(self, slot: int) -> None:
        self.free_queue.put(slot)
