"""The training set: extraction from registry packages (stand-ins), the manifest and its parts,
and the batches cut and rendered from it."""
import json
import tarfile

import pytest
import torch
from train_helpers import build, tiny_config

from pipeline.train.data import (
    TrainData,
    ValData,
    shot_cuts,
    split_window,
    window_starts,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("fetch")
    return root, build(root, part_mib=0.5)  # small parts, so the dataset needs several


def test_extraction_keeps_videos_and_photos_with_their_sources_and_split(built):
    _, dataset = built
    manifest = json.loads((dataset / "manifest.json").read_text())
    videos = {e["file"]: e for e in manifest["items"] if e["kind"] == "video"}
    assert set(videos) == {"videos/walk.webm", "videos/street.webm"}
    assert videos["videos/street.webm"]["split"] == "val" and videos["videos/walk.webm"]["split"] == "train"
    assert videos["videos/walk.webm"]["frames"] == 20 and videos["videos/walk.webm"]["width"] == 80
    assert manifest["val_clips"] == ["street.webm"]
    photos = {e["source_path"]: e for e in manifest["items"] if e["kind"] == "photo"}
    assert set(photos) == {
        "usr/share/doc/opencv-doc/examples/data/fruits.jpg",
        "usr/share/wallpapers/Hill/contents/images/800x600.jpg",
        "usr/share/wallpapers/Lake/contents/images/1600x900.png",
        "skimage/data/astronaut.png", "skimage/data/coffee.png"}
    lake = photos["usr/share/wallpapers/Lake/contents/images/1600x900.png"]
    assert (lake["width"], lake["height"]) == (1280, 720) and lake["file"].endswith(".jpg")
    assert lake["source_package"] == "plasma-workspace-wallpapers"
    reasons = {s["source_path"].split("/")[-1]: s["reason"] for s in manifest["skipped"]}
    assert "damaged" in reasons["Megamind_bugy.avi"]
    assert "thumbnail" in reasons["screenshot.png"]
    assert "duplicate" in reasons["1600x900.png"]  # Mirror/ repeats Lake/
    assert not list((dataset.parent / "unpacked" / "scikit-image").rglob("*.py"))  # code stays out


def test_parts_are_standalone_tars_under_the_limit_that_rebuild_the_dataset(built, tmp_path):
    root, dataset = built
    parts = sorted((root / "parts").glob("part-*.tar"))
    assert len(parts) > 1 and all(p.stat().st_size <= 0.5 * 2 ** 20 for p in parts)
    with tarfile.open(parts[0]) as t:
        assert "dataset/manifest.json" in t.getnames()
    for p in reversed(parts):  # any order
        with tarfile.open(p) as t:
            t.extractall(tmp_path, filter="data")
    manifest = json.loads((tmp_path / "dataset" / "manifest.json").read_text())
    for e in manifest["items"]:
        assert (tmp_path / "dataset" / e["file"]).read_bytes() == (dataset / e["file"]).read_bytes()


def test_window_layout_inputs_every_factor_frames_targets_between_second_and_third():
    for f in (2, 4, 8):
        t = 3 * f + 1
        x = torch.arange(t, dtype=torch.float32).view(1, 1, t, 1, 1).expand(1, 3, t, 2, 2)
        inputs, targets = split_window(x, f)
        assert inputs[0, 0, :, 0, 0].tolist() == [0, f, 2 * f, 3 * f]
        assert targets[0, :, 0, 0, 0].tolist() == list(range(f + 1, 2 * f))


def test_shot_cuts_are_found_and_no_window_crosses_one():
    frames = torch.full((12, 8, 8, 3), 100, dtype=torch.uint8)
    frames[:, :, :4] += torch.arange(12, dtype=torch.uint8).view(12, 1, 1, 1)  # gentle motion
    frames[6:] = 10  # a new shot from frame 6
    assert shot_cuts(frames) == [5]
    assert window_starts(12, 3, [5]) == [0, 1, 2, 3, 6, 7, 8, 9]


def test_batches_have_the_window_shape_and_never_come_from_held_out_clips(built):
    _, dataset = built
    cfg = tiny_config(dataset, data={"real_fraction": 1.0})
    data = TrainData(cfg, "cpu", seed=0, log=lambda *a: None)
    assert [c.name for c in data.clips] == ["walk.webm"]
    inputs, targets = data.next_batch(3)
    assert inputs.shape == (3, 3, 4, 32, 32) and targets.shape == (3, 1, 3, 32, 32)
    assert 0 <= float(inputs.min()) and float(inputs.max()) <= 1
    val = ValData(cfg, "cpu", log=lambda *a: None)
    assert [c.name for c in val.clips] == ["street.webm"] and len(val.clips[0].starts) == 2


def test_synthetic_samples_move_and_the_sampler_state_replays_exactly(built):
    _, dataset = built
    cfg = tiny_config(dataset, data={"real_fraction": 0.0})
    data = TrainData(cfg, "cpu", seed=3, log=lambda *a: None)
    state = {k: v.clone() if torch.is_tensor(v) else v for k, v in data.state_dict().items()}
    inputs, targets = data.next_batch(2)
    assert (inputs[:, :, 0] - inputs[:, :, 3]).abs().mean() > 0.01  # things move
    data.load_state_dict(state)
    again, again_t = data.next_batch(2)
    assert torch.equal(inputs, again) and torch.equal(targets, again_t)


def _render(**synthetic):
    from pipeline.train.config import SyntheticSection
    from pipeline.train.render import render_batch

    photos = (torch.rand(3, 3, 64, 96, generator=torch.Generator().manual_seed(1)) * 255).round()
    cfg = SyntheticSection(**{"layers_min": 0, "layers_max": 0, **synthetic})
    return render_batch(photos, 4, 7, 32, cfg, torch.Generator().manual_seed(2))


def test_a_still_camera_gives_the_same_background_in_every_frame_and_noise_differs_per_frame():
    moving = _render()
    assert (moving[:, :, 0] - moving[:, :, -1]).abs().amax(dim=(1, 2, 3)).min() > 0  # all pan
    still = _render(still_camera=1.0)
    assert torch.equal(still, still[:, :, :1].expand_as(still))
    noisy = _render(still_camera=1.0, noise=4.0)
    diff = (noisy[:, :, 0] - noisy[:, :, 1]).abs().mean() * 255
    assert 0.1 < diff < 8  # up to 4 levels of noise per frame, independent between frames


def test_a_swaying_background_bends_unevenly_and_smoothly_in_time():
    from pipeline.train.render import _Draw, _sway

    still = _render(still_camera=1.0, sway=1.0, sway_px=0.0)  # the same draws, no amplitude
    assert torch.equal(still, still[:, :, :1].expand_as(still))
    sway = _render(still_camera=1.0, sway=1.0, sway_px=2.0)
    moved = (sway - still).abs().mean(dim=1)                                  # (B, T, H, W)
    assert (moved.mean(dim=(1, 2, 3)) > 0.02).all()  # every sample sways
    per_place = moved.mean(dim=1).flatten(1)  # unevenly: some places much more than others
    assert (per_place.quantile(0.9, dim=1) > 2 * per_place.quantile(0.1, dim=1)).all()
    # The displacement itself: within its amplitude, off where asked, and smooth in time (a
    # frame's displacement is close to its neighbours' mean: no jumps from frame to frame).
    times = torch.arange(9, dtype=torch.float32) - 4
    on = torch.tensor([1.0, 1.0, 0.0])
    d = _sway(_Draw(torch.Generator().manual_seed(0), "cpu"), 3, times, 32, 2.0, on)
    assert d.shape == (3, 9, 32, 32, 2) and not d[2].any()
    assert float(d.norm(dim=-1).max()) <= 2.0 + 1e-5
    between = (d[:, 1:-1] - (d[:, :-2] + d[:, 2:]) / 2).norm(dim=-1).mean()
    step = (d[:, 1:] - d[:, :-1]).norm(dim=-1).mean()
    assert 0 < between < 0.5 * step


def test_a_fluttering_background_jitters_unevenly_and_afresh_in_every_frame():
    from pipeline.train.render import _Draw, _flutter

    assert torch.equal(_render(still_camera=1.0), _render(still_camera=1.0, flutter=0.0))
    still = _render(still_camera=1.0, flutter=1.0, flutter_px=0.0)  # the same draws, no amplitude
    assert torch.equal(still, still[:, :, :1].expand_as(still))
    jittered = _render(still_camera=1.0, flutter=1.0, flutter_px=1.0)
    assert ((jittered - still).abs().mean(dim=(1, 2, 3, 4)) > 0.002).all()  # every sample moves
    # The displacement itself: within its amplitude, off where asked, uneven in space, and as
    # far from its neighbours' mean as from either neighbour (no smooth path to follow).
    on = torch.tensor([1.0, 1.0, 0.0])
    d = _flutter(_Draw(torch.Generator().manual_seed(0), "cpu"), 3, 9, 48, 1.0, on)
    assert d.shape == (3, 9, 48, 48, 2) and not d[2].any()
    assert float(d.norm(dim=-1).max()) <= 1.0 + 1e-5
    per_place = d[:2].norm(dim=-1).mean(dim=1).flatten(1)
    assert (per_place.quantile(0.9, dim=1) > 2 * per_place.quantile(0.1, dim=1)).all()
    between = (d[:2, 1:-1] - (d[:2, :-2] + d[:2, 2:]) / 2).norm(dim=-1).mean()
    step = (d[:2, 1:] - d[:2, :-1]).norm(dim=-1).mean()
    assert between > 0.6 * step > 0
