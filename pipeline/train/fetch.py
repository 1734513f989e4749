"""Build the training set from downloaded registry packages (scripts/fetch_training_data.sh
downloads them; this module does everything after the download, offline).

    python -m pipeline.train.fetch --downloads .cache/train-data/debs --cache .cache/train-data \
        --out .traindata [--val vtest.avi,tree.avi] [--part-mib 45]

Steps: unpack each .deb (dpkg-deb -x) and the scikit-image wheel's skimage/data into the cache;
keep the real videos as they are and re-encode photos (long side <= --long-side, JPEG q92); write
manifest.json (source package and path, frames or size, split); pack the dataset folder into
standalone tar parts under --part-mib each (part-0.tar holds the manifest), so each can be carried
on its own and unpacked in any order with `tar -xf PART -C DIR`.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.train.media import read_photo, read_video, video_backend, video_fps

FORMAT = "flavr-serving-traindata/1"
VIDEO_EXT = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".mpg", ".ogv")
PHOTO_EXT = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
DEFAULT_VAL = ("vtest.avi", "tree.avi")  # real motion: pedestrians (static camera), a tree in wind
TAR_BLOCK = 512


@dataclass(frozen=True)
class Source:
    """Where a package keeps its media, and the smallest photo side worth keeping."""

    package: str
    folder: str           # inside the unpacked package
    photos: bool = True
    videos: bool = False
    min_side: int = 480


SOURCES = (
    Source("opencv-doc", "usr/share/doc/opencv-doc/examples/data", videos=True, min_side=300),
    Source("plasma-workspace-wallpapers", "usr/share/wallpapers"),
    Source("mate-backgrounds", "usr/share/backgrounds"),
    Source("gnome-backgrounds", "usr/share/backgrounds"),
    Source("scikit-image", "skimage/data", min_side=300),
)
# Files left out on purpose, with the reason written into the manifest.
SKIP = {
    "Megamind_bugy.avi": "a copy of Megamind.avi with damaged frames",
    "screenshot.*": "a thumbnail of a wallpaper that is kept at full size",
    "left[0-9][0-9].jpg": "one of 26 chessboard calibration shots (chessboard.png stands for them)",
    "right[0-9][0-9].jpg": "one of 26 chessboard calibration shots (chessboard.png stands for them)",
    "opencv-logo*": "a logo on a flat background",
}
_SIZE_NAME = re.compile(r"^(\d+)x(\d+)$")  # plasma's images/<W>x<H>.<ext>: one image, many sizes


def unpack(downloads: Path, cache: Path) -> dict[str, Path]:
    """Unpack every .deb and the scikit-image wheel found in `downloads`; {package: root}."""
    roots = {}
    for deb in sorted(downloads.glob("*.deb")):
        package = deb.name.split("_")[0]
        root = cache / "unpacked" / package
        stamp = root / ".unpacked-from"
        if not (stamp.exists() and stamp.read_text() == deb.name):
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
            stamp.write_text(deb.name)
        roots[package] = root
    for wheel in sorted(downloads.glob("scikit_image-*.whl")):
        root = cache / "unpacked" / "scikit-image"
        stamp = root / ".unpacked-from"
        if not (stamp.exists() and stamp.read_text() == wheel.name):
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            with zipfile.ZipFile(wheel) as z:
                members = [m for m in z.namelist() if m.startswith("skimage/data/")]
                z.extractall(root, members)  # only the sample images, never the code
            stamp.write_text(wheel.name)
        roots["scikit-image"] = root
    return roots


def _skip_reason(name: str) -> str | None:
    for pattern, reason in SKIP.items():
        if fnmatch.fnmatch(name, pattern):
            return reason
    return None


def _largest_of_sizes(paths: list[Path]) -> list[Path]:
    """Of files named <W>x<H>.<ext> in one folder (one image at many sizes) keep the largest."""
    keep, best = [], {}
    for p in paths:
        m = _SIZE_NAME.match(p.stem)
        if not m:
            keep.append(p)
            continue
        area = int(m[1]) * int(m[2])
        if p.parent not in best or area > best[p.parent][0]:
            best[p.parent] = (area, p)
    return keep + [p for _, p in best.values()]


def _thumb(rgb: np.ndarray) -> np.ndarray:
    """A 16x16 normalised grey thumbnail: near-identical images give near-identical thumbs."""
    grey = np.asarray(Image.fromarray(rgb).convert("L").resize((16, 16), Image.BILINEAR), np.float32)
    return (grey - grey.mean()) / (grey.std() + 1.0)


def collect(roots: dict[str, Path], val: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    """The videos and photos to keep (dicts with source info), and the skipped files with reasons."""
    items, skipped = [], []
    for src in SOURCES:
        if src.package not in roots:
            continue
        folder = roots[src.package] / src.folder
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        for p in files:
            rel = str(p.relative_to(roots[src.package]))
            reason = _skip_reason(p.name)
            if p.suffix.lower() in VIDEO_EXT and src.videos:
                if reason:
                    skipped.append({"source_package": src.package, "source_path": rel, "reason": reason})
                else:
                    items.append({"kind": "video", "path": p, "source_package": src.package,
                                  "source_path": rel, "split": "val" if p.name in val else "train"})
        photos = [p for p in files if p.suffix.lower() in PHOTO_EXT and src.photos]
        for p in _largest_of_sizes(photos):
            rel = str(p.relative_to(roots[src.package]))
            reason = _skip_reason(p.name)
            if reason:
                skipped.append({"source_package": src.package, "source_path": rel, "reason": reason})
                continue
            items.append({"kind": "photo", "path": p, "source_package": src.package,
                          "source_path": rel, "split": "train", "min_side": src.min_side,
                          "folder": src.folder})
    return items, skipped


def build_dataset(items: list[dict], skipped: list[dict], out: Path, long_side: int = 1280,
                  quality: int = 92) -> dict:
    """Write videos/ and photos/ under `out` and return the manifest (also written there)."""
    shutil.rmtree(out, ignore_errors=True)
    (out / "videos").mkdir(parents=True)
    (out / "photos").mkdir()
    entries, thumbs, used = [], [], set()
    for item in items:
        src: Path = item["path"]
        info = {k: item[k] for k in ("kind", "source_package", "source_path", "split")}
        if item["kind"] == "video":
            frames = read_video(src)
            name = _unique(f"videos/{src.name}", used)
            shutil.copyfile(src, out / name)
            info.update(file=name, frames=int(frames.shape[0]), height=int(frames.shape[1]),
                        width=int(frames.shape[2]), fps=video_fps(src))
        else:
            try:
                rgb = read_photo(src)
            except Exception as e:  # a file with a photo's suffix that is not one
                skipped.append({"source_package": item["source_package"],
                                "source_path": item["source_path"], "reason": f"unreadable: {e}"})
                continue
            h, w = rgb.shape[:2]
            if min(h, w) < item["min_side"]:
                continue  # icons, logos and previews: too small to crop from
            thumb = _thumb(rgb)
            if any(np.abs(thumb - t).mean() < 0.05 for t in thumbs):
                skipped.append({"source_package": item["source_package"],
                                "source_path": item["source_path"], "reason": "duplicate of a kept photo"})
                continue
            thumbs.append(thumb)
            scale = min(1.0, long_side / max(h, w))
            im = Image.fromarray(rgb)
            if scale < 1.0:
                im = im.resize((round(w * scale), round(h * scale)), Image.LANCZOS)
            # Name by the path under the source folder: plasma's Altai/contents/images/5120x2880.png
            # becomes plasma-workspace-wallpapers-Altai-images-5120x2880.jpg.
            under = Path(item["source_path"]).relative_to(item["folder"]).with_suffix("")
            words = [w for w in under.parts if w != "contents"]
            stem = re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join([item["source_package"], *words]))
            name = _unique(f"photos/{stem}.jpg", used)
            im.save(out / name, quality=quality)
            info.update(file=name, height=im.height, width=im.width)
        info["bytes"] = (out / info["file"]).stat().st_size
        entries.append(info)
    val = sorted(e["file"].split("/")[-1] for e in entries if e["split"] == "val")
    manifest = {"format": FORMAT, "val_clips": val, "items": entries, "skipped": skipped,
                "total_bytes": sum(e["bytes"] for e in entries)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _unique(name: str, used: set) -> str:
    stem, dot, ext = name.rpartition(".")
    k, candidate = 1, name
    while candidate in used:
        k += 1
        candidate = f"{stem}-{k}.{ext}"
    used.add(candidate)
    return candidate


def _tar_bytes(size: int) -> int:
    """Bytes a file of `size` takes in a tar: one header block plus whole data blocks."""
    return TAR_BLOCK + -(-size // TAR_BLOCK) * TAR_BLOCK


def pack_parts(dataset: Path, parts_dir: Path, part_bytes: int) -> list[Path]:
    """Standalone tar files of the dataset (paths start with the dataset's folder name), each at
    most part_bytes; the manifest goes first, then the files in manifest order."""
    manifest = json.loads((dataset / "manifest.json").read_text())
    files = ["manifest.json"] + [e["file"] for e in manifest["items"]]
    overhead = 2 * TAR_BLOCK + 20 * TAR_BLOCK + 10240  # end blocks, folder entries, record padding
    groups, current, used = [], [], overhead
    for rel in files:
        size = _tar_bytes((dataset / rel).stat().st_size)
        if size + overhead > part_bytes:
            raise ValueError(f"{rel} alone ({size} bytes) does not fit in a part of {part_bytes} bytes")
        if current and used + size > part_bytes:
            groups.append(current)
            current, used = [], overhead
        current.append(rel)
        used += size
    groups.append(current)
    parts_dir.mkdir(parents=True, exist_ok=True)
    for old in parts_dir.glob("part-*.tar"):
        old.unlink()
    paths = []
    for k, group in enumerate(groups):
        path = parts_dir / f"part-{k}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for rel in group:
                tar.add(dataset / rel, arcname=f"{dataset.name}/{rel}", recursive=False)
        if path.stat().st_size > part_bytes:
            raise RuntimeError(f"{path} came out at {path.stat().st_size} bytes, over {part_bytes}")
        paths.append(path)
    return paths


def summary(manifest: dict, parts: list[Path]) -> str:
    mib = 1024 * 1024
    lines = [f"{'file':44} {'package':28} {'split':5} {'frames':>6} {'size':>9}"]
    videos = [e for e in manifest["items"] if e["kind"] == "video"]
    photos = [e for e in manifest["items"] if e["kind"] == "photo"]
    for e in videos:
        lines.append(f"{e['file']:44} {e['source_package']:28} {e['split']:5} {e['frames']:>6} "
                     f"{e['width']}x{e['height']}")
    by_pkg: dict[str, list] = {}
    for e in photos:
        by_pkg.setdefault(e["source_package"], []).append(e)
    for pkg, es in by_pkg.items():
        lines.append(f"photos from {pkg}: {len(es)} ({sum(e['bytes'] for e in es) / mib:.1f} MiB)")
    lines.append(f"skipped: {len(manifest['skipped'])} files (reasons in manifest.json)")
    lines.append(f"dataset: {len(videos)} videos, {len(photos)} photos, "
                 f"{manifest['total_bytes'] / mib:.1f} MiB; parts: " +
                 ", ".join(f"{p.name} {p.stat().st_size / mib:.1f} MiB" for p in parts))
    return "\n".join(lines)


def verify(dataset: Path) -> list[str]:
    """What keeps `dataset` from being used here (unpacked parts missing, no video decoder)."""
    if not (dataset / "manifest.json").is_file():
        return [f"{dataset}/manifest.json is missing: unpack part-0.tar there"]
    manifest = json.loads((dataset / "manifest.json").read_text())
    problems = [f"{e['file']} is missing" for e in manifest["items"] if not (dataset / e["file"]).is_file()]
    if video_backend() is None:
        problems.append("neither OpenCV (cv2) nor PyAV (av) is installed: videos cannot be decoded")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.train.fetch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--verify", type=Path, metavar="DATASET",
                    help="only check an unpacked dataset folder (every file there, a decoder)")
    ap.add_argument("--downloads", type=Path, help="folder with the .deb and .whl files")
    ap.add_argument("--cache", type=Path, default=Path(".cache/train-data"),
                    help="where packages are unpacked and the dataset folder is built")
    ap.add_argument("--out", type=Path, default=Path(".traindata"), help="where part-K.tar go")
    ap.add_argument("--val", default=",".join(DEFAULT_VAL),
                    help="comma-separated video file names held out for validation")
    ap.add_argument("--long-side", type=int, default=1280, help="photos are downscaled to this")
    ap.add_argument("--quality", type=int, default=92, help="JPEG quality of re-encoded photos")
    ap.add_argument("--part-mib", type=float, default=45.0, help="largest part, MiB")
    args = ap.parse_args(argv)
    if args.verify is not None:
        problems = verify(args.verify)
        for p in problems[:10]:
            print(f"error: {p}", file=sys.stderr)
        if not problems:
            print(f"{args.verify}: complete")
        return 2 if problems else 0
    if args.downloads is None:
        ap.error("--downloads is required")

    val = tuple(v.strip() for v in args.val.split(",") if v.strip())
    roots = unpack(args.downloads, args.cache)
    if not roots:
        print(f"error: no .deb or scikit-image wheel in {args.downloads}", file=sys.stderr)
        return 2
    items, skipped = collect(roots, val)
    found = {i["path"].name for i in items if i["kind"] == "video"}
    missing = [v for v in val if v not in found]
    if missing:
        print(f"error: validation clips not found among the videos: {missing}; "
              f"videos are {sorted(found)}", file=sys.stderr)
        return 2
    manifest = build_dataset(items, skipped, args.cache / "dataset", args.long_side, args.quality)
    parts = pack_parts(args.cache / "dataset", args.out, int(args.part_mib * 1024 * 1024))
    print(summary(manifest, parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
