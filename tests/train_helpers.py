"""A small stand-in for the training data: real .deb files and a wheel laid out like the ones the
fetch script downloads, holding tiny synthetic clips and textured photos, and the dataset that
`python -m pipeline.train.fetch` builds from them."""
from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.media.synthetic import write_clip
from pipeline.train.config import config_from_dict
from pipeline.train.fetch import main as fetch_main

CLIP_SIZE = 80


def texture(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random RGB texture (uint8), different for every seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for _ in range(6):
        fx, fy = rng.uniform(-0.08, 0.08, 2)
        img += rng.uniform(0.2, 1.0, 3) * np.sin(2 * np.pi * (fx * x + fy * y) + rng.uniform(0, 6.3))[..., None]
    img = (img - img.min()) / (img.max() - img.min() + 1e-6)
    return (img * 255).astype(np.uint8)


def _deb(root: Path, package: str, files: dict[str, object], out: Path) -> Path:
    """Build a real .deb (dpkg-deb --build) holding `files` ({path: Path to copy | ndarray})."""
    tree = root / f"{package}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.0-1\nArchitecture: all\nMaintainer: test <t@example.org>\n"
        f"Description: stand-in for {package}\n")
    for rel, content in files.items():
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, np.ndarray):
            Image.fromarray(content).save(path)
        else:
            shutil.copyfile(content, path)
    deb = out / f"{package}_1.0-1_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True,
                   stdout=subprocess.DEVNULL)
    shutil.rmtree(tree)
    return deb


def make_downloads(root: Path) -> Path:
    """root/downloads with stand-ins for opencv-doc, a wallpaper package and scikit-image."""
    downloads = root / "downloads"
    downloads.mkdir(parents=True)
    clips = root / "clips"
    clips.mkdir()
    train_clip = write_clip(clips / "walk.webm", CLIP_SIZE, CLIP_SIZE, frames=20, seed=1)
    val_clip = write_clip(clips / "street.webm", CLIP_SIZE, CLIP_SIZE, frames=14, seed=2)
    data = "usr/share/doc/opencv-doc/examples/data"
    _deb(root, "opencv-doc", {f"{data}/walk.webm": train_clip, f"{data}/street.webm": val_clip,
                              f"{data}/Megamind_bugy.avi": train_clip,  # left out by name
                              f"{data}/fruits.jpg": texture(320, 400, 3),
                              f"{data}/icon.png": texture(32, 32, 4)},  # too small to keep
         downloads)
    walls = "usr/share/wallpapers"
    _deb(root, "plasma-workspace-wallpapers", {
        f"{walls}/Hill/contents/images/640x480.png": texture(480, 640, 5),
        f"{walls}/Hill/contents/images/800x600.jpg": texture(600, 800, 6),   # the largest kept
        f"{walls}/Hill/contents/screenshot.png": texture(480, 640, 7),       # a thumbnail
        f"{walls}/Lake/contents/images/1600x900.png": texture(900, 1600, 8),  # downscaled
        f"{walls}/Mirror/contents/images/1600x900.png": texture(900, 1600, 8),  # a duplicate
    }, downloads)
    wheel = downloads / "scikit_image-0.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, seed in (("astronaut", 9), ("coffee", 10)):
            png = root / f"{name}.png"
            Image.fromarray(texture(400, 600, seed)).save(png)
            z.write(png, f"skimage/data/{name}.png")
        z.writestr("skimage/__init__.py", "raise SystemExit('never run')\n")
    return downloads


def build(root: Path, part_mib: float = 45.0) -> Path:
    """Run the extraction on the stand-ins; returns the dataset folder (root/cache/dataset)."""


    downloads = make_downloads(root)
    rc = fetch_main(["--downloads", str(downloads), "--cache", str(root / "cache"),
               "--out", str(root / "parts"), "--val", "street.webm", "--part-mib", str(part_mib)])
    assert rc == 0
    return root / "cache" / "dataset"


def tiny_config(dataset: Path, **sections):
    """A CPU config over the stand-in dataset at 32x32, batch 1 (a CPU step costs about the
    optimizer's pass over FLAVR's 42M parameters); sections override fields by section."""
    d = {
        "name": "tiny",
        "data": {"root": str(dataset), "val_clips": ["street.webm"], "crop": 32,
                 "photo_size": [80, 112], "real_fraction": 0.5},
        "synthetic": {"layer_size": [0.3, 0.7]},
        "optim": {"lr": 5e-4, "warmup_steps": 1},
        "train": {"device": "cpu", "steps": 8, "batch_size": 1, "precision": "fp32",
                  "channels_last": False, "compile": False, "log_every": 2, "save_every": 1000},
        "val": {"every": 1000, "windows_per_clip": 2, "crop": 32, "batch_size": 2},
    }
    for section, values in sections.items():
        d.setdefault(section, {}).update(values)
    return config_from_dict(d)
