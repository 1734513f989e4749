#!/usr/bin/env bash
# Real static-camera footage for change-based inference: the Debian package opencv-doc ships
# vtest.avi, a 768x576 street scene from a fixed camera (~800 frames). Downloads the package with
# apt into a git-ignored cache and extracts its sample videos; nothing is installed and no video is
# ever committed.
#
#   bash scripts/fetch_opencv_videos.sh [CACHE_DIR]      (default: .cache/opencv-doc)
#
# Prints the path of vtest.avi. Needs apt-get and dpkg-deb (Debian/Ubuntu); run it where the
# package mirror is reachable and carry the cache folder to machines that cannot reach it.
set -euo pipefail

cache="${1:-.cache/opencv-doc}"
video="$cache/vtest.avi"
if [[ -s "$video" ]]; then
    echo "$video"
    exit 0
fi
mkdir -p "$cache/deb" "$cache/root"
(
    cd "$cache/deb"
    if ! ls opencv-doc_*.deb >/dev/null 2>&1; then
        # apt-get update needs root; an unprivileged user can still download with the lists it has.
        if [[ $(id -u) -eq 0 ]]; then apt-get update -qq; fi
        apt-get download -qq opencv-doc
    fi
)
deb=$(ls "$cache"/deb/opencv-doc_*.deb | head -n 1)
dpkg-deb -x "$deb" "$cache/root"
found=$(find "$cache/root" -name 'vtest.avi' -print -quit)
if [[ -z "$found" ]]; then
    echo "error: $deb holds no vtest.avi" >&2
    exit 1
fi
cp "$found" "$video"
# The package and its tree are large (documentation, images): keep only the sample videos.
find "$(dirname "$found")" -maxdepth 1 -name '*.avi' -exec cp -n {} "$cache/" \;
rm -rf "$cache/root" "$cache/deb"
echo "$video"
