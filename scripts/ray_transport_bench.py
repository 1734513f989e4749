"""Moving one tensor between two Ray nodes, two ways, on the CPU: torch.distributed (gloo
send/recv between the two actors, as transport/remote.py pulls a slot) and Ray's object store
(the producer returns the tensor, the consumer gets it). Prints the median seconds per transfer
and the rate, per size. Two Ray nodes on this machine unless --address names a cluster with
nodes offering the custom resources n1 and n2.

    python scripts/ray_transport_bench.py [--sizes-mb 0.25,1,4,16] [--repeats 20]

docs/ray.md holds what it printed on the 2-core CI machine.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@ray.remote(num_cpus=0.01)
class Peer:
    def join(self, host: str, port: int, rank: int) -> None:
        from pipeline.serving.transport import remote

        torch.set_num_threads(1)
        remote.join(host, port, rank, 2)

    def send(self, numel: int, repeats: int) -> None:
        import torch.distributed as dist

        t = torch.ones(numel)
        for _ in range(repeats):
            dist.send(t, dst=1)

    def recv(self, numel: int, repeats: int) -> list[float]:
        import torch.distributed as dist

        t = torch.empty(numel)
        spans = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            dist.recv(t, src=0)
            spans.append(time.perf_counter() - t0)
        return spans

    def make(self, numel: int) -> torch.Tensor:
        # One tensor per size, made once: each call then costs what a hand-off would (its
        # serialisation into the object store), not the making.
        if getattr(self, "made", None) is None or self.made.numel() != numel:
            self.made = torch.ones(numel)
        return self.made

    def fetch(self, refs: list) -> float:
        t0 = time.perf_counter()
        value = ray.get(refs[0])
        value.sum()  # touch it: a lazily mapped buffer is read here
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes-mb", default="0.25,1,4,16")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--address", default=None)
    args = p.parse_args()
    cluster, temp = None, None
    if args.address is None:
        from ray._private.utils import get_ray_address_file
        from ray.cluster_utils import Cluster

        address_dir = os.path.dirname(get_ray_address_file(None))  # Ray notes the cluster there
        made_address_dir = not os.path.exists(address_dir)
        os.makedirs(address_dir, exist_ok=True)
        temp = tempfile.mkdtemp(prefix="flavr-rayb-", dir="/tmp")
        cluster = Cluster(shutdown_at_exit=False)
        cluster.add_node(num_cpus=2, resources={"n1": 10}, temp_dir=temp, include_dashboard=False)
        cluster.add_node(num_cpus=2, resources={"n2": 10}, temp_dir=temp)
    try:
        ray.init(address=args.address or cluster.address, configure_logging=False,
                 log_to_driver=False)
        import datetime

        import torch.distributed as dist

        host = ray.util.get_node_ip_address()
        store = dist.TCPStore(host, 0, world_size=None, is_master=True, wait_for_workers=False,
                              timeout=datetime.timedelta(seconds=120))
        a = Peer.options(resources={"n1": 0.01}).remote()
        b = Peer.options(resources={"n2": 0.01}).remote()
        ray.get([a.join.remote(host, store.port, 0), b.join.remote(host, store.port, 1)])
        print(f"{'MB':>6} {'gloo ms':>9} {'gloo MB/s':>10} {'store ms':>9} {'store MB/s':>11}")
        for mb in (float(x) for x in args.sizes_mb.split(",")):
            numel = int(mb * 2**20 / 4)
            a.send.remote(numel, args.repeats)
            gloo = statistics.median(ray.get(b.recv.remote(numel, args.repeats)))
            spans = [ray.get(b.fetch.remote([a.make.remote(numel)]))
                     for _ in range(args.repeats)]
            obj = statistics.median(spans)
            print(f"{mb:>6g} {1e3 * gloo:>9.2f} {mb / gloo:>10.0f} {1e3 * obj:>9.2f} "
                  f"{mb / obj:>11.0f}")
        ray.kill(a)
        ray.kill(b)
        ray.shutdown()
    finally:
        if cluster is not None:
            cluster.shutdown()
            shutil.rmtree(temp, ignore_errors=True)
            if made_address_dir:
                shutil.rmtree(address_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
