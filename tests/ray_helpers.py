"""A Ray cluster of several nodes on this machine, for tests (Ray's own cluster utilities): its
session files in a short folder of its own, and nothing of it left once the block ends."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


@contextlib.contextmanager
def local_cluster(*nodes: dict):
    """One Ray node per dict of `Cluster.add_node` arguments, the first the head."""
    from ray._private.utils import get_ray_address_file
    from ray.cluster_utils import Cluster

    # Ray notes the cluster's address in <temporary folder>/ray for other drivers to find.
    address_dir = os.path.dirname(get_ray_address_file(None))
    had_address_dir = os.path.exists(address_dir)
    os.makedirs(address_dir, exist_ok=True)
    temp = tempfile.mkdtemp(prefix="flavr-rayc-", dir="/tmp")  # socket paths must be short
    cluster = Cluster(shutdown_at_exit=False)
    try:
        for node in nodes:
            cluster.add_node(temp_dir=temp, **node)
        yield cluster
    finally:
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        if not had_address_dir:
            shutil.rmtree(address_dir, ignore_errors=True)
