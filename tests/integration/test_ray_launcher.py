"""The Ray launcher on a real Ray cluster of two nodes on this machine (Ray's own cluster
utilities; the nodes offer the custom resources n1 and n2): the split placement with its
decoder on the other node runs through the real pipeline, its tensors crossing by the pull
transport (torch.distributed, gloo), and gives the local launcher's outputs exactly; a killed
actor ends the run naming it, and nothing stays behind."""
from __future__ import annotations

import glob
import os
import signal
import threading
import time

import pytest
import torch

ray = pytest.importorskip("ray", reason="the Ray launcher needs ray (pip install -e '.[ray]')")

from pipeline.analysis.requests_csv import read_rows  # noqa: E402
from pipeline.config import config_from_dict  # noqa: E402
from pipeline.serving.orchestrator import RunOptions, run  # noqa: E402
from ray_helpers import local_cluster  # noqa: E402
from run_helpers import alive, process_table, run_dir_of, saved_outputs, wait_for  # noqa: E402

SIZE = 16  # 16x16 frames: the whole model (deepest maps 2x2) at a quarter of 32x32's compute
STORE = 100 * 2**20  # each node's object store: small, for a CI container's /dev/shm
SPLIT_ACROSS = [{"name": "decode", "kind": "decode", "gpus": ["n1:0"], "queue": "per_gpu"},
                {"name": "encoder", "kind": "model", "stages": ["stem", "layer4"],
                 "gpus": ["n1:0"]},
                {"name": "decoder", "kind": "model", "stages": ["dec0", "head"],
                 "gpus": ["n2:1"]}]
SPLIT_LOCAL = [{"name": "decode", "kind": "decode", "gpus": [0], "queue": "per_gpu"},
               {"name": "encoder", "kind": "model", "stages": ["stem", "layer4"], "gpus": [0]},
               {"name": "decoder", "kind": "model", "stages": ["dec0", "head"], "gpus": [1]}]


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on this machine."""
    with local_cluster(dict(num_cpus=4, resources={"n1": 10}, include_dashboard=False,
                            object_store_memory=STORE),
                       dict(num_cpus=4, resources={"n2": 10}, object_store_memory=STORE)) as c:
        yield c


def make_config(steps, name: str, launcher: str = "ray", address: str | None = None):
    return config_from_dict({
        "name": name, "device": "cpu", "launcher": launcher, "ray": {"address": address},
        "videos": {"synthetic": {"count": 2, "width": SIZE, "height": SIZE, "frames": 6,
                                 "fps": 24, "codec": "vp9", "seed": 1}},
        "frames_per_request": 4,
        "model": {"factor": 2, "precision": "fp32", "resolution": [SIZE, SIZE]},
        "pipeline": steps})


def options(tmp_path, **over) -> RunOptions:
    base = dict(mean_interval_ms=50, videos=4, warmup=1, queue_size=16,
                logs_root=str(tmp_path / "logs"), progress=False, cpu_threads=1,
                start_timeout_s=240, stall_timeout_s=120, video_cache=str(tmp_path / "videos"),
                save_outputs=True, save_tensors=True)
    base.update(over)
    return RunOptions(**base)


def test_a_split_across_two_nodes_gives_the_local_launchers_outputs(tmp_path, cluster):
    across = run(make_config(SPLIT_ACROSS, "across", address=cluster.address), options(tmp_path))
    assert across.error is None, across.error
    rows = read_rows(across.run_dir / "requests.csv")
    ok = [r for r in rows if r.status == "ok"]
    assert len(ok) == 5
    measured = [r for r in ok if not r.warmup]
    mean = sum(r.latency_s for r in measured) / len(measured)
    for r in measured:  # the columns add up: every stamp is on the one clock
        assert abs(r.latency_s - r.accounted_s()) < 0.01 * mean, r
    # The decoder is on the other node: its inputs were pulled, and the pull was timed.
    assert all(row["decoder.handoff_s"] > 0 for row in across.rows)
    assert "clock: every process on the main process's machine" in across.report
    assert across.summary["run"]["clock_error_s"] == 0.0
    ray.init(address=cluster.address, configure_logging=False, log_to_driver=False)
    try:  # the run's placement group is gone from the cluster it joined...
        from ray.util import placement_group_table

        assert {g["state"] for g in placement_group_table().values()} <= {"REMOVED"}
    finally:
        ray.shutdown()
    for name, p in process_table(across.run_dir).items():  # ...and so are its actors
        if name != "main":
            wait_for(lambda: not alive(p["pid"]), 30, f"{name} to be gone")
    local = run(make_config(SPLIT_LOCAL, "local", launcher="local"), options(tmp_path))
    assert local.error is None, local.error
    a, b = saved_outputs(across), saved_outputs(local)
    assert a.keys() == b.keys() and len(a) == 5
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_measured_clock_offset_is_within_its_bound(cluster):
    """On one machine the true offset is 0: the measurement must find it within its bound."""
    from pipeline.serving.launch.clock_sync import measure_offset
    from pipeline.serving.launch.ray_hub import Hub

    ray.init(address=cluster.address, configure_logging=False, log_to_driver=False)
    try:
        hub = ray.remote(Hub).options(num_cpus=0).remote()
        offset, bound = measure_offset(hub, same_host_is_exact=False)
        assert 0 < bound < 1.0 and abs(offset) <= bound, (offset, bound)
        assert measure_offset(hub) == (0.0, 0.0)  # same boot id: the same CLOCK_MONOTONIC
        ray.kill(hub)
    finally:
        ray.shutdown()


def test_a_hub_queue_hands_over_what_is_queued_in_one_call(cluster):
    """get_many: the first item waited for, then only what is queued, up to the count asked."""
    from pipeline.serving.launch.ray_hub import Hub, HubQueue

    ray.init(address=cluster.address, configure_logging=False, log_to_driver=False)
    try:
        hub = ray.remote(Hub).options(num_cpus=0, max_concurrency=100).remote()
        ray.get(hub.new_queue.remote(1, 8))
        q = HubQueue(hub, 1, 8)
        assert q.get_many(4, timeout=0.05) == []
        for i in range(3):
            q.put(i)
        assert q.get_many(2, timeout=1.0) == [0, 1]
        assert q.get_many(4, timeout=1.0) == [2]
        waiting = hub.get_many.remote(1, 4, 30.0)  # answered by the next put
        q.put(7)
        assert ray.get(waiting, timeout=30) == [7]
        ray.kill(hub)
    finally:
        ray.shutdown()


def test_puts_nobody_waits_for_reach_a_hub_queue_in_the_order_they_were_made(cluster):
    """Ray runs an async actor's calls as they reach it: without the hub's numbering, a few
    percent of 3,000 puts made back to back overtook an earlier one."""
    from pipeline.serving.launch.ray_hub import Hub, HubQueue

    ray.init(address=cluster.address, configure_logging=False, log_to_driver=False)
    try:
        hub = ray.remote(Hub).options(num_cpus=0, max_concurrency=1000).remote()
        ray.get(hub.new_queue.remote(2, 0))
        q = HubQueue(hub, 2, 0)
        n = 3000
        for i in range(n):
            q.put(i)
        got: list[int] = []
        while len(got) < n:
            items = q.get_many(n, timeout=30.0)
            assert items, f"{len(got)} of {n} items came"
            got += items
        assert got == list(range(n))
        ray.kill(hub)
    finally:
        ray.shutdown()


def test_a_node_no_cluster_node_offers_is_refused_before_the_run_naming_its_entry(tmp_path,
                                                                                  cluster):
    """Checked right after joining the cluster: no run folder, no actor, Ray left as found (it
    used to be found once the run had started, and end it with a report of nothing)."""
    from pipeline.errors import ConfigError

    steps = [dict(s) for s in SPLIT_ACROSS]
    steps[2]["gpus"] = ["n3:0"]
    with pytest.raises(ConfigError) as exc:
        run(make_config(steps, "nowhere", address=cluster.address), options(tmp_path))
    assert exc.value.field == "pipeline[2].gpus[0]"
    assert "resource n3" in str(exc.value) and "n1, n2" in str(exc.value), exc.value
    assert not (tmp_path / "logs").exists()
    assert not ray.is_initialized()



def test_a_lost_node_ends_the_run_naming_the_process_on_it(tmp_path, cluster):
    opts = options(tmp_path, videos=400, mean_interval_ms=100, save_outputs=False,
                   save_tensors=False)
    box = {}
    thread = threading.Thread(target=lambda: box.update(result=run(
        make_config(SPLIT_ACROSS, "lost", address=cluster.address), opts)), daemon=True)
    thread.start()
    run_dir = wait_for(lambda: run_dir_of(tmp_path / "logs"), 240, "the run's process table")
    wait_for(lambda: (run_dir / "requests.csv").exists()
             and len((run_dir / "requests.csv").read_text().splitlines()) > 2, 240,
             "requests to finish")
    (n2,) = cluster.worker_nodes  # the node the decoder runs on
    lost_at = time.monotonic()
    cluster.remove_node(n2, allow_graceful=False)
    thread.join(120)
    assert not thread.is_alive(), "the run did not end after its node was lost"
    result = box["result"]
    victim = next(n for n in process_table(run_dir) if n.startswith("decoder"))
    assert result.error and f"process '{victim}'" in result.error, result.error
    assert (result.run_dir / "report.txt").exists()
    print(f"run ended {time.monotonic() - lost_at:.1f} s after the node was lost: {result.error}")
    cluster.add_node(num_cpus=4, resources={"n2": 10}, object_store_memory=STORE,
                     temp_dir=cluster.head_node.get_temp_dir_path())

def test_a_main_process_killed_with_9_leaves_nothing_of_its_ray_instance(tmp_path):
    """Ray's agents used to outlive it by a minute, its session folder for good; a session
    folder of a main process killed earlier is removed when the next instance starts."""
    import subprocess
    import sys

    from pipeline.serving.launch.ray_actors import TEMP_PREFIX
    from pipeline.serving.launch.ray_reaper import descendants

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"/tmp/{TEMP_PREFIX}{dead.pid}-stale"
    os.makedirs(f"{stale}/session_x")
    code = ("import time\n"
            "from pipeline.serving.launch.ray_actors import RayLauncher\n"
            "L = RayLauncher()\n"
            "print(L.temp_dir, flush=True)\n"
            "time.sleep(600)\n")
    main = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.DEVNULL)
    try:
        temp_dir = main.stdout.readline().strip()
        assert temp_dir.startswith(f"/tmp/{TEMP_PREFIX}{main.pid}-"), temp_dir
        assert not os.path.exists(stale)
        ray_processes = descendants(main.pid)
        names = {open(f"/proc/{p}/cmdline").read().split("\0")[0] for p in ray_processes
                 if os.path.exists(f"/proc/{p}/cmdline")}
        assert any("DashboardAgent" in n for n in names), names
    finally:
        main.kill()
        main.wait()
    killed = time.monotonic()
    wait_for(lambda: all(not alive(p) for p in ray_processes), 15, "Ray's processes to end")
    wait_for(lambda: not os.path.exists(temp_dir), 15, "the session folder to go")
    print(f"all gone {time.monotonic() - killed:.1f} s after the main process was killed")


# Last in the module: after a Ray instance of its own has been started and shut down in this
# process, joining the module's cluster again was seen to fail to create actors (Ray 2.60).
def test_a_killed_actor_ends_the_run_naming_it_and_nothing_stays(tmp_path):
    """Without an address: the launcher's own Ray instance, the local placement as actors."""
    before = set(glob.glob(f"/tmp/flavr-ray-{os.getpid()}-*"))
    # The config says local, --launcher ray: its config.yaml must say what ran.
    opts = options(tmp_path, videos=400, mean_interval_ms=100, save_outputs=False,
                   save_tensors=False, launcher="ray")
    box = {}
    thread = threading.Thread(target=lambda: box.update(result=run(
        make_config(SPLIT_LOCAL, "killed", launcher="local"), opts)), daemon=True)
    thread.start()
    run_dir = wait_for(lambda: run_dir_of(tmp_path / "logs"), 240, "the run's process table")
    table = process_table(run_dir)
    victim = next(n for n in table if n.startswith("decoder"))
    wait_for(lambda: (run_dir / "requests.csv").exists()
             and len((run_dir / "requests.csv").read_text().splitlines()) > 2, 240,
             "requests to finish")
    os.kill(table[victim]["pid"], signal.SIGKILL)
    thread.join(120)
    assert not thread.is_alive(), "the run did not end after its actor was killed"
    result = box["result"]
    assert result.error and f"process '{victim}'" in result.error, result.error
    assert (result.run_dir / "report.txt").exists()
    assert "launcher: ray\n" in (result.run_dir / "config.yaml").read_text()
    assert result.summary["run"]["launcher"] == "ray"
    for name, p in table.items():  # every actor killed, Ray's own processes with the instance
        if name != "main":
            wait_for(lambda: not alive(p["pid"]), 30, f"{name} to be gone")
    assert set(glob.glob(f"/tmp/flavr-ray-{os.getpid()}-*")) == before  # its session folder
