#!/usr/bin/env bash
# Fetch FLAVR's training data from package registries, by package name, and pack it for carrying.
#
#   bash scripts/fetch_training_data.sh [CACHE] [OUT]      (defaults .cache/train-data .traindata)
#
# On a Debian machine: `apt-get download` (never install) the packages below and
# `pip download scikit-image` (its wheel ships sample images under skimage/data), then
# `python -m pipeline.train.fetch` unpacks them (dpkg-deb -x), keeps the real videos of opencv-doc
# as they are, re-encodes the photos (long side <= 1280, JPEG q92), writes manifest.json and packs
# the dataset into OUT/part-K.tar files under 45 MiB each. Unpack them on the training machine:
#   for p in .traindata/part-*.tar; do tar -xf "$p" -C .traindata; done   # -> .traindata/dataset
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${1:-.cache/train-data}
OUT=${2:-.traindata}
PACKAGES=(opencv-doc plasma-workspace-wallpapers mate-backgrounds gnome-backgrounds)
DOWNLOADS="$CACHE/downloads"
mkdir -p "$DOWNLOADS"
apt-get update -qq
( cd "$DOWNLOADS" && apt-get download "${PACKAGES[@]}" )
python -m pip download --no-deps --only-binary=:all: --dest "$DOWNLOADS" scikit-image
python -m pipeline.train.fetch --downloads "$DOWNLOADS" --cache "$CACHE" --out "$OUT"
du -sh "$CACHE/dataset" "$OUT"/part-*.tar
