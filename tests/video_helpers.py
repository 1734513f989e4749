"""Helpers for the video tests: real clips written once per test session, and bad files."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.media.synthetic import CONTAINER, truth_path, write_clip

REPO = Path(__file__).resolve().parents[1]
_cache: dict = {}


def video_clip(tmp_path_factory, codec: str = "vp9", width: int = 64, height: int = 64,
               frames: int = 10, fps: float = 24, seed: int = 0, truth_factor: int | None = None,
               crf: int | None = None) -> Path:
    """A generated clip, written once per session for each set of parameters."""
    key = (codec, width, height, frames, fps, seed, truth_factor, crf)
    if key not in _cache:
        folder = tmp_path_factory.mktemp(f"{codec}_{width}x{height}_{frames}f")
        path = folder / f"clip{CONTAINER[codec]}"
        _cache[key] = write_clip(path, width, height, frames, fps, codec, seed, truth_factor, crf)
    return _cache[key]


def truth_frames(clip: Path) -> tuple[torch.Tensor, int]:
    """(N,3,H,W) float in [0,255] true frames at t = j/F, and F."""
    data = np.load(truth_path(clip))
    return torch.from_numpy(data["frames"]).permute(0, 3, 1, 2).float(), int(data["factor"])


def grey_levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per channel, in 8-bit grey levels, of two [0,1] frame stacks."""
    return ((a.float() - b.float()).abs() * 255.0).mean(dim=(0, 2, 3))


def run_interpolate(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "pipeline.cli.interpolate", *map(str, args),
                           "--quiet"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def start_interpolate(*args, stderr: Path) -> subprocess.Popen:
    """`interpolate` as a child process left running (to be signalled); its stderr goes to a
    file, which the test reads while it runs."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(stderr, "w") as err:
        return subprocess.Popen([sys.executable, "-m", "pipeline.cli.interpolate",
                                 *map(str, args), "--quiet"], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=err, text=True)


def signal_when(child: subprocess.Popen, ready, sig: int, what: str, stderr: Path) -> int:
    """Send `sig` to `child` once `ready()` is true (within 120 s, `what` naming that moment in
    the failure), and return its exit code; a child still running at the end is killed."""
    try:
        deadline = time.monotonic() + 120
        while not ready():
            assert child.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, f"no {what} after 120 s"
            time.sleep(0.05)
        child.send_signal(sig)
        return child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def cut_in_half(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def ffv1_clip(path: Path, frames: int = 3) -> Path:
    """A real, valid clip in a codec the pipeline does not decode (lossless FFV1, Matroska)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=24)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(np.full((48, 32), i * 40, np.uint8), format="yuv420p")
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def odd_clip(path: Path, width: int = 47, height: int = 33, frames: int = 6, fps: int = 12) -> Path:
    """A real VP9 clip of odd width and height (the project's own writer makes even sizes only)."""
    import av

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libvpx-vp9", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            for p in s.encode(av.VideoFrame.from_ndarray(np.roll(base, i, axis=1), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def corrupt_middle(src: Path, dst: Path, fraction: float = 0.25, seed: int = 0) -> Path:
    """Overwrite `fraction` of the file's bytes, starting at its middle, with random bytes."""
    data = bytearray(src.read_bytes())
    start, n = len(data) // 2 - int(len(data) * fraction) // 2, int(len(data) * fraction)
    data[start:start + n] = np.random.default_rng(seed).integers(0, 256, n, np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst
