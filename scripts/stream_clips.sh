#!/usr/bin/env bash
# Real footage for stream workloads (configs/streams-*.yaml): the long videos of Debian's
# opencv-doc package, which the pipeline's decoders cannot read as shipped (vtest.avi is MS-MPEG-4
# v2, Megamind.avi MPEG-4 part 2, tree.avi Cinepak), re-encoded to H.264 (crf 12) with PyAV:
#
#   .cache/streams/vtest.mp4          768x576, 795 frames, 10 fps: a street from a fixed camera
#   .cache/streams/vtest-720p.mp4     the same scaled to 1280x720 (720p-class)
#   .cache/streams/megamind.mp4       720x528, 270 frames: animation with shot cuts
#   .cache/streams/megamind-720p.mp4  the same scaled to 1280x720
#   .cache/streams/vtest-720p-half.mp4  every other frame of the 720p street (398 frames, 5 fps),
#       with vtest-720p-half.truth.mp4 (all 795, 10 fps) as its ground truth for --check-outputs
#       (python -m pipeline.media.truth decimate)
#
#   bash scripts/stream_clips.sh [CACHE_DIR]      (default: .cache)
#
# Downloads the package with scripts/fetch_opencv_videos.sh (apt-get download + dpkg-deb -x into
# CACHE_DIR/opencv-doc; nothing installed, no video committed: .cache/ is git-ignored). Run it
# where the package mirror is reachable and carry CACHE_DIR/streams to machines that cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${1:-.cache}"
bash scripts/fetch_opencv_videos.sh "$cache/opencv-doc" > /dev/null
mkdir -p "$cache/streams"
make() {  # SRC DST [SIZE]
    if [[ -s "$2" ]]; then echo "$2"; return; fi
    python -m pipeline.media.transcode "$1" "$2.part.mp4" ${3:+--size "$3"} > /dev/null
    mv "$2.part.mp4" "$2"
    echo "$2"
}
make "$cache/opencv-doc/vtest.avi" "$cache/streams/vtest.mp4"
make "$cache/opencv-doc/vtest.avi" "$cache/streams/vtest-720p.mp4" 720x1280
make "$cache/opencv-doc/Megamind.avi" "$cache/streams/megamind.mp4"
make "$cache/opencv-doc/Megamind.avi" "$cache/streams/megamind-720p.mp4" 720x1280
# Static real footage with ground truth: the clip keeps 1 frame in 2, the truth is all of them.
half="$cache/streams/vtest-720p-half.mp4"
if [[ ! -s "$half" || ! -s "${half%.mp4}.truth.mp4" ]]; then
    python -m pipeline.media.truth decimate "$cache/opencv-doc/vtest.avi" "${half%.mp4}.part.mp4" \
        --factor 2 --size 720x1280 > /dev/null
    mv "${half%.mp4}.part.truth.mp4" "${half%.mp4}.truth.mp4"
    mv "${half%.mp4}.part.mp4" "$half"
fi
echo "$half"
