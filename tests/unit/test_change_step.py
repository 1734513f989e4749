"""The change step's hand-off in one process: a planning encoder step and a following decoder
step, their change state written as the slot's named tensors and their plans carried as item
metadata; two items batched into one decoder call give what each gives alone."""
import torch
from change_helpers import SIZE, active_model, still_window, with_moving_patch

from models.flavr.change_based import ChangeBasedFLAVR
from models.flavr.change_plan import Detection
from pipeline.config import ModelConfig, StepConfig
from pipeline.config.schema import ChangeBasedSpec
from pipeline.serving.change_step import ChangeModelStep, merge_metas
from pipeline.serving.transport.items import Item, Part

CHANGE = ChangeBasedSpec(tile=16, halo=8, fallback=4.0)


def step(name, stages):
    s = ChangeModelStep(StepConfig(name=name, kind="model", gpus=[0], stages=stages),
                        ModelConfig(change_based=CHANGE), torch.device("cpu"))
    s.setup()
    return s


def windows(seed):
    """Three windows of one clip: still, then a patch moving at two places."""
    still = still_window(seed=seed)
    return torch.cat([still, with_moving_patch(still, 8, 8, 12, 12),
                      with_moving_patch(still, 40, 60, 12, 12)])


def encode(encoder, rid, frames):
    """The encoder's call on one request; returns the item it would hand on."""
    part = Part(rid, 0, frames.shape[0], "clip", frames.shape[0] + 1)
    item = Item("pool", 0, frames.shape[0], [part], SIZE)
    published = {}

    def publish(group, tensors, n_rows=None):
        published.update({k: v.clone() for k, v in tensors.items()})

    result = encoder.run({"frames": frames}, SIZE, 1, publish, [item])
    return Item("enc", rid, frames.shape[0], [part], SIZE, change=result.meta), published, result


def decode(decoder, items, tensors):
    out = []
    decoder.run(tensors, SIZE, len(items), lambda g, t, n_rows=None: out.append(t["out"]), items)
    return out[0]


def test_two_items_batched_into_one_call_give_what_each_gives_alone():
    encoder = step("enc", ("stem", "layer2"))
    first, second = (encode(encoder, rid, windows(3 + rid)) for rid in (0, 1))
    alone = [decode(step("dec", ("layer3", "head")), [item], tensors)
             for item, tensors, _ in (first, second)]
    batched_tensors = {k: torch.cat([first[1][k], second[1][k]]) for k in first[1]}
    batched = decode(step("dec", ("layer3", "head")), [first[0], second[0]], batched_tensors)
    assert torch.allclose(batched, torch.cat(alone), atol=1e-5, rtol=0)


def test_the_encoder_reports_each_requests_tiles_and_whole_windows():
    encoder = step("enc", ("stem", "layer2"))
    item, tensors, result = encode(encoder, 7, windows(3))
    (rid, counts), = result.reports
    n = item.change.stats[0].tiles_total
    # still: no tile; the first moving window runs whole (its gates serve the next one's tiles)
    assert rid == 7 and counts.windows == 3 and counts.windows_whole == 1
    assert counts.tiles == n + item.change.stats[2].tiles and 0 < item.change.stats[2].tiles < n
    assert tensors["whole.x2"].shape[0] == 1 and tensors["centre"].shape[0] == 2
    assert tensors["tiles.x2"].shape[0] == item.change.stats[2].tiles == len(item.change.sample)


def test_merged_plans_count_rows_and_tiles_from_each_items_start():
    encoder = step("enc", ("stem", "layer2"))
    a, b = encode(encoder, 0, windows(3))[0], encode(encoder, 1, windows(4))[0]
    merged = merge_metas([a.change, b.change], [3, 3])
    assert merged.whole_rows == a.change.whole_rows + [r + 3 for r in b.change.whole_rows]
    assert merged.tiled_rows == a.change.tiled_rows + [r + 3 for r in b.change.tiled_rows]
    offset = len(a.change.tiled_rows)
    assert merged.sample == a.change.sample + [s + offset for s in b.change.sample]


def test_change_tests_made_per_item_and_merged_plan_the_batch_as_one_test_does():
    # What the planner does on a GPU (each item's test on a stream of its own): the same plan.
    a, b = windows(3), windows(4)
    config = step("enc", ("stem", "layer2")).change
    plans = []
    for detection in (None, Detection.merge([ChangeBasedFLAVR(active_model(), config).detect(x)
                                             for x in (a, b)], [3, 3])):
        cb = ChangeBasedFLAVR(active_model(), config)
        plans.append(cb.begin(torch.cat([a, b]), ["one"] * 3 + ["two"] * 3, detection).plan)
    one, merged = plans
    assert merged.host == one.host and merged.stats == one.stats
    assert merged.whole_rows == one.whole_rows and merged.tiled_rows == one.tiled_rows
