"""Reading the dataset's files: whole videos into RGB frame arrays, photos into RGB arrays.

The GPU machines have OpenCV but not always PyAV, this machine the other way round: video
decoding uses whichever is installed (OpenCV first). Both return the same uint8 (T, H, W, 3) RGB.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def video_backend() -> str | None:
    """'opencv' or 'pyav', whichever can be imported first; None if neither."""
    try:
        import cv2  # noqa: F401
        return "opencv"
    except ImportError:
        pass
    try:
        import av  # noqa: F401
        return "pyav"
    except ImportError:
        return None


def read_video(path, max_frames: int = 0) -> np.ndarray:
    """Every frame of a video (or the first max_frames), uint8 (T, H, W, 3) RGB."""
    path = Path(path)
    backend = video_backend()
    if backend is None:
        raise RuntimeError(f"{path}: cannot decode video: neither OpenCV (cv2) nor PyAV (av) "
                           "is installed")
    frames = _read_opencv(path, max_frames) if backend == "opencv" else _read_pyav(path, max_frames)
    if not frames:
        raise RuntimeError(f"{path}: {backend} decoded no frames")
    return np.stack(frames)


def _read_opencv(path: Path, max_frames: int) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while not max_frames or len(frames) < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    return frames


def _read_pyav(path: Path, max_frames: int) -> list[np.ndarray]:
    import av

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames and len(frames) >= max_frames:
                break
    return frames


def read_photo(path) -> np.ndarray:
    """A photo as uint8 (H, W, 3) RGB (alpha dropped over black, greyscale expanded)."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            background = Image.new("RGBA", im.size, (0, 0, 0, 255))
            im = Image.alpha_composite(background, im)
        return np.array(im.convert("RGB"))  # a writable copy: torch.from_numpy shares it


def video_fps(path) -> float | None:
    """The container's frame rate, or None where the backend cannot tell."""
    backend = video_backend()
    try:
        if backend == "opencv":
            import cv2

            cap = cv2.VideoCapture(str(path))
            try:
                fps = cap.get(cv2.CAP_PROP_FPS)
            finally:
                cap.release()
            return float(fps) if fps and fps > 0 else None
        if backend == "pyav":
            import av

            with av.open(str(path)) as container:
                rate = container.streams.video[0].average_rate
                return float(rate) if rate else None
    except Exception:
        return None
    return None
