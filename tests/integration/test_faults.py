"""Faults and bad input: nothing hangs, nothing is lost.

Real child processes on the CPU, real clips, real signals, 16x16 frames. Killing a process
mid-run uses a real FLAVR runner (the sink saves each finished request, which shows from outside
that requests are flowing); the other tests use decode + the `sleep` TEST step (a fixed service
time instead of the model), since what they test is the orchestration. Every test checks the
same contract: the run ends promptly with a message naming what went wrong, every request is
accounted for in requests.csv and the report (ok, or error / dropped / unfinished with a reason),
and no process, /dev/shm entry or file descriptor is left behind.

scripts/soak.py runs the long soak (5000 requests); test_soak_short runs 300.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from run_helpers import (
    FRAMES,
    RUN_END_S,
    SIZE,
    WHOLE,
    Background,
    Benchmark,
    assert_logs_account_for_everything,
    by_status,
    children_alive,
    clip,
    killed_main,
    long_benchmark,
    make_config,
    open_fds,
    options,
    outputs_written,
    process_table,
    run_dir_of,
    shm_entries,
    shm_left_over,
    sleep_steps,
    synthetic,
    wait_for,
    warm_process_state,
    write_yaml_config,
)

from pipeline.config import config_from_dict
from pipeline.serving.launch.local import TEMP_PREFIX
from pipeline.serving.orchestrator import run

# -- 1. a child killed mid-run ------------------------------------------------------------------

VICTIMS = {"runner": "flavr[0]@gpu0", "decoder": "decode[0]@gpu0", "sink": "sink",
           "client": "client"}


@pytest.mark.parametrize("victim", list(VICTIMS))
def test_a_child_killed_mid_run_ends_the_run_promptly_and_leaves_nothing(tmp_path, victim):
    warm_process_state()
    # A real FLAVR runner (16x16 frames); the sink saves each finished request, which shows
    # from outside that requests are flowing.
    cfg = make_config(synthetic(), WHOLE)
    opts = options(tmp_path, videos=400, mean_interval_ms=300, save_outputs=True,
                   save_tensors=True)
    shm_before, fds_before = shm_entries(), open_fds()
    bg = Background(cfg, opts)
    run_dir = wait_for(lambda: run_dir_of(tmp_path / "logs"), 60, "processes.json")
    table = process_table(run_dir)
    assert {VICTIMS[victim], "main"} <= set(table)
    # 4 saved: the sink saves a request's output just before it records the request ok, so a
    # killed sink may leave the last one saved but unrecorded
    wait_for(lambda: outputs_written(run_dir) >= 4, 60, "the first requests to complete")
    os.kill(table[VICTIMS[victim]]["pid"], signal.SIGKILL)
    t_kill = time.monotonic()
    result = bg.join(timeout=30)
    took = time.monotonic() - t_kill
    print(f"{victim} killed: the run ended {took:.2f} s later: {result.error}")
    assert took < RUN_END_S, f"the run took {took:.1f} s to end after the kill"

    role = table[VICTIMS[victim]]["role"]
    assert result.error and VICTIMS[victim] in result.error and role in result.error, result.error
    assert "signal 9" in result.error
    assert result.exit_code != 0
    rows = assert_logs_account_for_everything(run_dir, 401)
    statuses = by_status(rows)
    assert len(statuses.get("ok", [])) >= 3
    assert statuses.get("unfinished") or statuses.get("dropped")
    for r in statuses.get("unfinished", []) + statuses.get("dropped", []):
        assert VICTIMS[victim] in r["error"] or "never admitted" in r["error"], r["error"]
    assert "error" not in statuses
    report = (run_dir / "report.txt").read_text()
    assert VICTIMS[victim] in report

    assert children_alive(table) == []
    assert not shm_left_over(shm_before)
    assert open_fds() <= fds_before, f"{fds_before} fds before the run, {open_fds()} after"


def test_a_runner_killed_during_start_up_ends_the_run_promptly(tmp_path):
    """Nothing waits on a barrier for a process that is gone: the handshake watches too."""
    cfg = make_config(synthetic(), WHOLE)
    bg = Background(cfg, options(tmp_path, videos=20))
    run_dir = wait_for(lambda: run_dir_of(tmp_path / "logs"), 60, "processes.json")
    table = process_table(run_dir)
    os.kill(table[VICTIMS["runner"]]["pid"], signal.SIGKILL)  # still importing or warming up
    t_kill = time.monotonic()
    result = bg.join(timeout=30)
    took = time.monotonic() - t_kill
    print(f"runner killed while starting: the run ended {took:.2f} s later: {result.error}")
    # The others are still importing and cannot look at the stop flag: they get the launcher's
    # grace period, then are terminated.
    assert took < RUN_END_S, f"the run took {took:.1f} s to end after the kill"
    assert VICTIMS["runner"] in result.error and "signal 9" in result.error
    rows = assert_logs_account_for_everything(run_dir, 21, allowed=("dropped",))
    assert all(r["error"].startswith("never admitted") for r in rows)
    assert children_alive(table) == []


@pytest.mark.parametrize("how,when", [("sigint-group", "serving"), ("sigterm-main", "serving"),
                                      ("sigint-group", "start-up"), ("impatient", "serving")])
def test_ctrl_c_and_sigterm_stop_cleanly_and_write_the_logs(tmp_path, how, when):
    shm_before = shm_entries()
    bench, run_dir, table = long_benchmark(tmp_path, serving=when == "serving")
    t0 = time.monotonic()
    if how == "sigint-group":  # Ctrl-C in a terminal: the whole foreground process group
        os.killpg(bench.pid, signal.SIGINT)
    elif how == "sigterm-main":  # `kill PID` of the main process only
        os.kill(bench.pid, signal.SIGTERM)
    else:  # Ctrl-C, and again while it stops, then a SIGTERM: the logs must still be written
        for delay, sig in ((0, signal.SIGINT), (0.5, signal.SIGINT), (0.3, signal.SIGTERM)):
            time.sleep(delay)
            os.killpg(bench.pid, sig)
    code = bench.wait(timeout=20)
    took = time.monotonic() - t0
    if code is None:
        bench.kill_group()
        raise AssertionError(f"the benchmark did not stop after {how}:\n{bench.out}\n{bench.err}")
    print(f"{how} while {when}: exit code {code} {took:.2f} s later")
    # While starting up, children notice the stop only after their warm-up, or are terminated
    # after a grace period.
    assert took < RUN_END_S, f"stopping took {took:.1f} s"
    assert code != 0
    err = bench.err
    assert "interrupted" in err, err
    assert "Traceback" not in err, err  # children too: none dies of the Ctrl-C itself
    assert str(run_dir) in bench.out
    rows = assert_logs_account_for_everything(run_dir, 401)
    statuses = by_status(rows)
    if when == "serving":
        assert len(statuses.get("ok", [])) >= 2
    else:
        assert set(statuses) == {"dropped"}
    assert "error" not in statuses
    assert wait_for(lambda: not children_alive(table), 5, "the children to exit") is True
    assert not shm_left_over(shm_before)


# -- the main process killed: the children must not outlive it -----------------------------------

def test_children_exit_within_a_second_when_the_main_process_is_killed(tmp_path_factory):
    # The kill is shared with test_logs' test of requests.csv (run_helpers.killed_main).
    km = killed_main(tmp_path_factory)
    took = km.children_gone_s
    print(f"children gone {took} s after the main process was killed")
    assert took is not None, "the children were still there 10 s after the kill"
    assert took < 1.0
    assert km.exit_code == -signal.SIGKILL
    # The children's temporary folder outlives a main process killed -9; the next run's
    # launcher removes it.
    assert [f for f in km.stale if f.name.startswith(f"{TEMP_PREFIX}{km.bench.pid}-")], km.stale


# -- 3. bad requests fail alone -------------------------------------------------------------------

def bad_inputs(folder: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """Each kind of bad clip, and words of which its request's error must contain one."""
    from video_helpers import corrupt_middle, cut_in_half

    folder.mkdir(parents=True, exist_ok=True)
    # Clips of exactly one request's frames, so a cut anywhere hits frames the request decodes.
    short = clip(folder / "short.webm", frames=FRAMES, seed=7)
    longer = clip(folder / "longer.webm", frames=12, seed=7)
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    text = folder / "text.mp4"
    text.write_text("this is a text file, not a video\n")
    return {
        "missing": (clip(folder / "doomed.webm", seed=8), ("no such file",)),
        "zero-byte": (empty, ("empty",)),
        "text": (text, ("not a video",)),
        "truncated": (cut_in_half(short, folder / "truncated.webm"), ("truncated",)),
        # Random bytes over a tenth of the file, in its middle: the stream, not the headers.
        "corrupt": (corrupt_middle(longer, folder / "corrupt.webm", fraction=0.1),
                    ("damaged", "corrupt", "unreadable")),
        "unsupported-codec": (mpeg4_clip(folder / "mpeg4.mp4"), ("unsupported codec 'mpeg4'",)),
        "one-frame": (clip(folder / "one-frame.webm", frames=1, seed=9), ("at least 2",)),
    }


def mpeg4_clip(path: Path) -> Path:
    """A valid MPEG-4 Part 2 clip: PyAV writes it, the pipeline does not take the codec."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        for i in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((SIZE, SIZE, 3), 40 * i, np.uint8),
                                               format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_bad_requests_fail_alone_with_their_reason(tmp_path):
    bad = bad_inputs(tmp_path / "bad")
    good = [clip(tmp_path / "good" / f"g{i}.webm", seed=i) for i in range(len(bad))]
    videos = []  # good, bad, good, bad, ...
    for g, (path, _) in zip(good, bad.values()):
        videos += [g, path]
    cfg = make_config({"paths": [str(v) for v in videos]}, sleep_steps(sleep_ms=5))
    # Every clip twice: a replica that has failed a request goes on serving the next ones.
    n = 2 * len(videos)
    bg = Background(cfg, options(tmp_path, videos=n, warmup=0, mean_interval_ms=10,
                                 on_full="block"))
    # The config was checked with the file present; it disappears once the run has started.
    wait_for(lambda: run_dir_of(tmp_path / "logs"), 60, "processes.json")
    bad["missing"][0].unlink()
    result = bg.join(timeout=120)

    assert result.error is None, result.error
    rows = assert_logs_account_for_everything(result.run_dir, n)
    status_of = {}
    for r in rows:
        status_of.setdefault(r["video"], set()).add(r["status"])
    for g in good:
        assert status_of[str(g)] == {"ok"}, (g, status_of[str(g)])
    for kind, (path, words) in bad.items():
        mine = [r for r in rows if r["video"] == str(path)]
        assert len(mine) == 2, kind
        for r in mine:
            assert r["status"] == "error", (kind, r["status"], r["error"])
            assert path.name in r["error"], (kind, r["error"])
            assert any(w in r["error"] for w in words), (kind, r["error"])
            assert r["error"].startswith("decode"), (kind, r["error"])
    counts = json.loads((result.run_dir / "report.json").read_text())["counts"]
    assert counts["error"] == 2 * len(bad) and counts["ok"] == 2 * len(good)


# -- 4. bad configs fail before anything starts ---------------------------------------------------

def _no_gpu() -> bool:
    from pipeline.serving.gpu_monitor import gpu_count_nvml

    return not gpu_count_nvml()


BAD_CONFIGS = {
    "missing-video": ("videos: {paths: [no-such-clip.mp4]}\n", [], "videos.paths[0]",
                      "no such file"),
    "yaml-syntax": ("videos: {paths: [a.mp4]\n", [], "bad.yaml:", "cannot parse YAML"),
    "sleep-without-time": ("videos: {synthetic: {count: 1, width: 16, height: 16, frames: 4}}\n",
                           ["  - {name: decode, kind: decode, gpus: [0]}",
                            "  - {name: s, kind: sleep, gpus: [0]}"], "pipeline[1].sleep_ms",
                           "sleep_ms > 0"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_a_bad_config_stops_the_command_before_anything_starts(tmp_path, case):
    text, steps, field, reason = BAD_CONFIGS[case]
    steps = steps or ["  - {name: decode, kind: decode, gpus: [0]}",
                      "  - {name: s, kind: sleep, sleep_ms: 1, gpus: [0]}"]
    config = tmp_path / "bad.yaml"
    config.write_text("name: bad\nframes_per_request: 4\ndevice: cpu\n" + text + "pipeline:\n"
                      + "\n".join(steps) + "\n")
    bench = Benchmark(tmp_path, config)
    assert bench.wait(timeout=60) == 2
    lines = bench.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), bench.err
    assert field in lines[0] and reason in lines[0], lines[0]
    assert not (tmp_path / "logs").exists()  # no run folder: nothing started


@pytest.mark.skipif(not _no_gpu(), reason="needs a machine without a GPU")
def test_asking_for_cuda_without_a_gpu_names_the_device_field(tmp_path):
    config = write_yaml_config(tmp_path, sleep_steps(), [clip(tmp_path / "c.webm")])
    bench = Benchmark(tmp_path, config, "--device", "cuda")
    assert bench.wait(timeout=60) == 2
    assert bench.err.startswith("error: config field 'device': cuda was asked for but this "
                                "machine has no GPU"), bench.err
    assert len(bench.err.strip().splitlines()) == 1
    assert not (tmp_path / "logs").exists()


# -- 5. overload ----------------------------------------------------------------------------------

@pytest.mark.parametrize("on_full,where", [("stop", "decode.in"), ("stop", "sleep.in"),
                                           ("block", "decode.in")])
def test_overload_ends_with_every_request_accounted_for(tmp_path, on_full, where):
    # The sleep step takes 200 ms a request (2.6 s for sleep.in); every queue holds 2. decode.in:
    # all requests at once, and the decoder owns one slot, so it waits for the sleep step and the
    # client's queue fills. sleep.in: requests about every 400 ms (seed 9: no two of the first
    # six within 195 ms), which the decoder keeps up with even when a loaded machine holds it up
    # for a while (its queue overflows only if it stalls for most of a second); it runs ahead
    # into its 4 slots and overflows the sleep step's queue itself while the sleep step is on its
    # first request (2.6 s).
    decode_slots, interval, sleep_ms = (1, 0, 200) if where == "decode.in" else (4, 400, 2600)
    cfg = make_config(synthetic(), sleep_steps(sleep_ms=sleep_ms, pool_slots=1,
                                               decode_slots=decode_slots))
    n = 10
    result = run(cfg, options(tmp_path, videos=n, warmup=0, mean_interval_ms=interval,
                              queue_size=2, on_full=on_full, seed=9))
    assert result.error is None, result.error
    rows = assert_logs_account_for_everything(result.run_dir, n, allowed=("ok", "dropped"))
    statuses = by_status(rows)
    if on_full == "block":
        assert len(statuses.get("ok", [])) == n
        return
    assert statuses.get("ok") and statuses.get("dropped")
    full = [r for r in statuses["dropped"] if r["error"].startswith(f"queue '{where}' is full")]
    assert full, [r["error"] for r in statuses["dropped"]]
    others = [r for r in statuses["dropped"] if r not in full]
    assert all(r["error"].startswith("never admitted: queue") for r in others), others
    # Admission closed at the overflow: the requests the client had not reached never were
    # (one it tried is recorded with its schedule, and refused by the full queue).
    never = [r for r in rows if r["scheduled_s"] is None]
    assert never and all(r["error"].startswith("never admitted") for r in never)
    if where == "decode.in":  # the client itself met the full queue and issued nothing more
        first = min(r["request_id"] for r in full)
        assert all(r["issued_s"] is None for r in rows if r["request_id"] > first)
    report = (result.run_dir / "report.txt").read_text()
    assert f"queue '{where}' is full" in report


# -- 6. soak (short): scripts/soak.py runs 5000 ---------------------------------------------------

def test_soak_short_leaks_no_files_and_little_memory(tmp_path):
    from scripts.soak import format_table, soak

    figures = soak(2000, sleep_ms=0.5, size=SIZE, logs_root=str(tmp_path / "logs"),
                   video_cache=str(tmp_path / "videos"), period_s=0.05)
    print(format_table(figures))
    assert figures["ok"] == 2000 and figures["run_error"] is None
    main = figures["main"]
    assert main["fds_end"] <= main["fds_start"], main
    # A first run in a process leaves some memory behind (allocator high-water marks); a leak
    # per request would grow with the run. 2000 requests must cost far less than this.
    assert main["rss_end_mib"] - main["rss_start_mib"] < 64, main
    assert set(figures["children"]) == {"client", "decode[0]@gpu0", "sleep[0]@gpu0", "sink"}
    for name, c in figures["children"].items():
        if c["rss_early_mib"] is not None and c["rss_end_mib"] is not None:
            assert c["rss_end_mib"] - c["rss_early_mib"] < 16, (name, c)


def test_a_request_too_large_for_the_runners_memory_fails_alone(tmp_path):
    # model.memory_limit_gib caps the runner (on the CPU: the address space it may still grow
    # by). A 256x256 clip needs more than half a GiB in FLAVR; the 16x16 ones need far less.
    from pipeline.media.synthetic import write_clip

    small = clip(tmp_path / "v" / "small.webm", frames=4)
    big = write_clip(tmp_path / "v" / "big.webm", width=256, height=256, frames=4, seed=2)
    cfg = config_from_dict({
        "name": "oom", "device": "cpu", "videos": {"paths": [str(small), str(big)]},
        "frames_per_request": 3,
        "model": {"factor": 2, "precision": "fp32", "memory_limit_gib": 0.5},
        "pipeline": [{"name": "decode", "kind": "decode", "gpus": [0]},
                     {"name": "flavr", "kind": "model", "stages": ["stem", "head"], "gpus": [0]}]})
    result = run(cfg, options(tmp_path, videos=4, warmup=0, mean_interval_ms=0))
    assert result.error is None, result.error
    rows = assert_logs_account_for_everything(result.run_dir, 4)
    for r in rows:
        if r["video"] == str(small):
            assert r["status"] == "ok", r
        else:
            assert r["status"] == "error" and "out of memory in step 'flavr'" in r["error"], r
