"""The moving average of the weights (optim.ema): its arithmetic, its warm-up and its copy."""
import pytest
import torch
from torch import nn

from pipeline.train.ema import WeightAverage


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer("count", torch.zeros((), dtype=torch.long))


def test_each_update_moves_the_average_by_one_minus_the_rate():
    net = Net()
    avg = WeightAverage(net, decay=0.9)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    for step in range(30):
        with torch.no_grad():
            net.lin.weight.add_(1.0)
            net.lin.bias.mul_(-2.0)
            net.count += 1
        d = avg.rate()
        assert d == pytest.approx(min(0.9, (1 + step) / (10 + step)))
        avg.update()
        for k, v in net.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v if v.is_floating_point() else v.clone()
    got = avg.module.state_dict()
    for k in expected:
        assert torch.allclose(got[k], expected[k], rtol=1e-5, atol=1e-6), k
    assert int(got["count"]) == 30 and avg.updates == 30


def test_the_average_is_a_separate_frozen_copy():
    net = Net()
    avg = WeightAverage(net, decay=0.999)
    assert not any(p.requires_grad for p in avg.module.parameters())
    assert not avg.module.training
    with torch.no_grad():
        net.lin.weight.fill_(5.0)
    assert not torch.equal(avg.module.lin.weight, net.lin.weight)


def test_loading_saved_average_weights_and_their_count():
    net, other = Net(), Net()
    avg = WeightAverage(net, decay=0.99)
    avg.load({k: v.to(torch.bfloat16) if v.is_floating_point() else v
              for k, v in other.state_dict().items()}, updates=7)
    assert avg.updates == 7 and avg.rate() == pytest.approx(8 / 17)
    assert torch.equal(avg.module.lin.weight, other.lin.weight.to(torch.bfloat16).float())
    with pytest.raises(ValueError, match="keys do not fit .* missing 3 "):
        avg.load({}, 0)
    wrong = {**other.state_dict(), "lin.weight": other.lin.weight[:1]}  # copy_ would broadcast
    with pytest.raises(ValueError, match=r"shapes do not fit .*lin.weight \(1, 3\) vs \(2, 3\)"):
        avg.load(wrong, 0)
