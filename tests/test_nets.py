import math
import pytest
import torch
from helpers import overfit

from cnnvision.nets import KeypointNet, KeypointNetConfig, build_net, net_spec


@pytest.mark.parametrize("arch", ["basic_cnn", "kpnet", "kpheat", "hourglass"])
@pytest.mark.parametrize("layout,channels", [("kaggle15", 1), ("ibug68", 3)])
def test_shapes_finite_and_every_parameter_gets_a_gradient(arch, layout, channels):
    net = KeypointNet(KeypointNetConfig(arch=arch, layout=layout, in_channels=channels, image_size=32, width=8))
    x = torch.rand(3, channels, 32, 32)
    out = net(x)
    k = net.layout.num_points
    assert out.shape == (3, 2 * k)
    assert torch.isfinite(out).all()
    target = torch.rand(3, k, 2) * 32
    net.loss(out, target).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"


def test_a_deeper_hourglass_starts_as_the_shallower_one_it_was_built_from():
    """depth adds zero-initialised residual blocks after the hourglass's joins: the shallower
    net's weights load into it unchanged, the two place the same points, and training reaches
    the new blocks."""
    torch.manual_seed(0)
    shallow = KeypointNet(KeypointNetConfig(arch="hourglass", layout="ibug68", image_size=32, width=4))
    for p in shallow.parameters():
        p.data += 0.1 * torch.randn_like(p)
    deep = KeypointNet(KeypointNetConfig(arch="hourglass", layout="ibug68", image_size=32, width=4, depth=2))
    missing, unexpected = deep.load_state_dict(shallow.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith(("model.more8.", "model.more4.")) for k in missing)
    x = torch.rand(2, 1, 32, 32)
    shallow.eval(), deep.eval()
    with torch.no_grad():
        assert torch.equal(deep(x), shallow(x))
    deep.train()
    deep.loss(deep(x), torch.rand(2, 68, 2) * 32).backward()
    assert deep.model.more4[0].body[-1][-1].weight.grad.abs().sum() > 0  # the zeroed scale learns first
    for cfg in (dict(arch="kpheat", depth=1), dict(arch="hourglass", depth=5)):
        with pytest.raises(ValueError, match="depth"):
            KeypointNet(KeypointNetConfig(**cfg))


def test_basic_cnn_is_the_tutorials_net():
    net = KeypointNet(KeypointNetConfig(arch="basic_cnn"))
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 32, (3, 3)), (32, 64, (2, 2)), (64, 128, (2, 2))]
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12 * 12 * 128, 100), (100, 100), (100, 30)]


def test_masked_loss_ignores_missing_labels():
    net = KeypointNet(KeypointNetConfig(arch="basic_cnn", image_size=32))
    out = torch.zeros(2, 30)
    target = torch.full((2, 15, 2), 15.5)  # the centre: unit coordinate 0
    full = net.loss(out, target)
    assert full.item() == pytest.approx(0.0, abs=1e-6)
    target[0, 3] = float("nan")
    wild = out.clone()
    wild[0, 6:8] = 1e3  # a huge error on the missing point must not count
    assert net.loss(wild, target).item() == pytest.approx(0.0, abs=1e-6)
    wild[1, 0] = 1.0  # one labelled coordinate off by 1 of 58 labelled
    assert net.loss(wild, target).item() == pytest.approx(1 / 58)
    all_missing = torch.full((2, 15, 2), float("nan"))
    loss = net.loss(wild.requires_grad_(), all_missing)
    assert loss.item() == 0.0 and torch.isfinite(loss)


@pytest.mark.parametrize("arch,loss,factor", [("kpnet", "mse", 50), ("kpheat", "l1", 8), ("hourglass", "l1", 8), ("basic_cnn", "mse", 50)])
def test_overfits_a_tiny_batch(faces32, arch, loss, factor):
    torch.manual_seed(0)
    net = KeypointNet(KeypointNetConfig(arch=arch, image_size=32, width=8, dropout=0.0, loss=loss))
    x, y = faces32.batch(torch.arange(8))
    first, last = overfit(net, x, y, 150)
    assert last < first / factor


def test_losses():
    net = KeypointNet(KeypointNetConfig(arch="basic_cnn", image_size=32, loss="l1"))
    target = torch.full((1, 15, 2), 15.5)  # unit coordinate 0
    out = torch.zeros(1, 30)
    out[0, 0] = 0.5
    assert net.loss(out, target).item() == pytest.approx(0.5 / 30)
    net.cfg.loss = "smooth_l1"
    assert net.loss(out, target).item() == pytest.approx((0.5 - 1 / 32) / 30)
    net.cfg.loss = "mse"
    assert net.loss(out, target).item() == pytest.approx(0.25 / 30)


def test_l1_nme_weighs_each_face_as_nme_does():
    from cnnvision.nets.keypoints import nme_weights
    net = KeypointNet(KeypointNetConfig(arch="basic_cnn", layout="ibug68", image_size=32, loss="l1_nme"))
    target = torch.full((3, 68, 2), 15.5)  # every point at unit coordinate 0
    target[0, 36, 0], target[0, 45, 0] = 7.5, 23.5    # eye corners 0.5 apart in unit coordinates
    target[1, 36, 0], target[1, 45, 0] = 11.5, 19.5   # 0.25 apart: its errors count twice as much
    target[2, 36] = float("nan")                      # a corner missing: weight 1
    weights = nme_weights((target + 0.5) / 16 - 1)
    assert weights.tolist() == pytest.approx([2 / 3, 4 / 3, 1.0])
    out = ((target + 0.5) / 16 - 1).nan_to_num().flatten(1)
    assert net.loss(out, target).item() == pytest.approx(0.0, abs=1e-6)
    for face, weight in enumerate(weights.tolist()):
        wrong = out.clone()
        wrong[face, 0] += 0.3  # the same error on point 0 of each face in turn
        labelled = 3 * 136 - 2
        assert net.loss(wrong, target).item() == pytest.approx(0.3 * weight / labelled)
    with pytest.raises(ValueError, match="68-point"):
        KeypointNet(KeypointNetConfig(arch="basic_cnn", layout="kaggle15", image_size=32, loss="l1_nme"))


def test_heatmap_divergence_asks_for_one_peak_on_the_point():
    from cnnvision.nets.keypoints import cell_centres, heatmap_divergence
    grid = cell_centres(8)
    target = torch.tensor([[[grid[2], grid[5]], [grid[6], grid[6]], [float("nan"), float("nan")]]])  # (1, 3, 2)
    sigma = 2 / 8  # one cell
    gauss = lambda x, y: -((grid[None, :] - x) ** 2 + (grid[:, None] - y) ** 2) / (2 * sigma ** 2)  # noqa: E731
    peaked = torch.stack([gauss(grid[2], grid[5]), gauss(grid[1], grid[1]), gauss(0, 0)])[None]  # (1, 3, 8, 8)
    flat = torch.zeros(1, 3, 8, 8)
    on, off = heatmap_divergence(peaked, target, grid), heatmap_divergence(flat, target, grid)
    assert on.shape == (1, 3) and on[0, 2] == 0 and off[0, 2] == 0   # an unlabelled point costs nothing
    assert on[0, 0] < 1e-5 < off[0, 0] < math.log(2)                 # the Gaussian on the point itself: none
    assert on[0, 1] > off[0, 1]                                      # a peak in the wrong place is worse than flat


def test_heatmap_loss_adds_the_divergence_only_while_training():
    from cnnvision.nets.keypoints import heatmap_divergence
    cfg = KeypointNetConfig(arch="kpheat", layout="ibug68", image_size=32, width=4, heatmap_loss=0.5)
    net = KeypointNet(cfg).train()
    x = torch.rand(2, 1, 32, 32)
    target = torch.rand(2, 68, 2) * 31
    target[1, 3] = float("nan")
    out = net(x)
    assert isinstance(out, tuple) and out[0].shape == (2, 136) and out[1].shape == (2, 68, 8, 8)
    js = heatmap_divergence(out[1], (2 * target + 1) / 32 - 1, net.model.grid)
    expected = net.coordinate_loss(out[0], target) + 0.5 * js.sum() / (2 * 68 - 1)
    assert net.loss(out, target).item() == pytest.approx(expected.item(), rel=1e-5)
    net.loss(out, target).backward()
    assert net.model.heatmaps.weight.grad.abs().sum() > 0
    assert net.eval()(x).shape == (2, 136)  # evaluation and export see the points alone
    with pytest.raises(ValueError, match="heatmap nets"):
        KeypointNet(KeypointNetConfig(arch="kpnet", layout="ibug68", image_size=32, heatmap_loss=0.5))


def test_flip_prediction_of_symmetric_net_output_is_consistent(faces32):
    net = KeypointNet(KeypointNetConfig(arch="basic_cnn", image_size=32)).eval()
    x, _ = faces32.batch(torch.arange(4))
    with torch.no_grad():
        plain = net.predict(x, flip=False)
        both = net.predict(x, flip=True)
        mirrored = net.predict(x.flip(-1), flip=False)[:, net.layout.flip_permutation()]
    mirrored[..., 0] = 31 - mirrored[..., 0]
    torch.testing.assert_close(both, (plain + mirrored) / 2)


def test_net_spec_round_trips():
    net = KeypointNet(KeypointNetConfig(arch="kpnet", width=8, image_size=32))
    spec = net_spec(net)
    again = build_net(spec["task"], spec["config"])
    assert again.cfg == net.cfg
    with pytest.raises(ValueError):
        KeypointNet(KeypointNetConfig(arch="resnet999"))


def test_nme_is_scale_free():
    from cnnvision.nets.keypoints import nme
    true = torch.rand(5, 68, 2) * 50
    pred = true + 1.0
    assert nme(pred * 3, true * 3) == pytest.approx(nme(pred, true), rel=1e-5)


def test_basic_cnn_inference_in_slices_gives_the_same_outputs():
    net = KeypointNet(KeypointNetConfig(arch="basic_cnn", image_size=32)).eval()
    x = torch.rand(23, 1, 32, 32)
    with torch.no_grad():
        sliced = net(x)  # 10 + 10 + 3 images through the conv stages
        net.model.inference_slice = 100
        whole = net(x)
    torch.testing.assert_close(sliced, whole, rtol=1e-5, atol=1e-6)


def test_heatmap_spread_is_the_mean_entropy_of_the_point_distributions():
    from cnnvision.nets.keypoints import cell_centres, soft_argmax
    grid = cell_centres(8)
    flat = torch.zeros(2, 3, 8, 8)
    peaked = torch.full((2, 3, 8, 8), -50.0)
    peaked[:, :, 2, 5] = 50.0
    points, spread = soft_argmax(torch.cat([flat, peaked]), grid, spread=True)
    assert torch.allclose(spread[:2], torch.full((2,), float(torch.log(torch.tensor(64.0)))), atol=1e-5)
    assert torch.allclose(spread[2:], torch.zeros(2), atol=1e-5)
    assert torch.equal(points, soft_argmax(torch.cat([flat, peaked]), grid))
    assert torch.allclose(points[2:].view(2, 3, 2), torch.stack([grid[5], grid[2]]).expand(2, 3, 2))


def test_soft_argmax_reads_any_layout_in_fp32_under_autocast_too():
    """The means and entropies of the maps, written out, for a channels-last map as the nets infer
    in and a plain one, and under bf16 autocast (whose matrix products would round the points
    to 8 bits)."""
    from cnnvision.nets.keypoints import cell_centres, soft_argmax
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 6, 7) * 4
    grid = cell_centres(7)
    p = logits.flatten(2).softmax(-1).view(3, 5, 6, 7)
    xs, ys = (p.sum(2) * grid[:7]).sum(-1), (p.sum(3) * grid[:6]).sum(-1)
    entropy = -(p * p.clamp(min=1e-30).log()).sum((2, 3)).mean(1)
    for x in (logits, logits.contiguous(memory_format=torch.channels_last)):
        for bf16 in (False, True):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                points, spread = soft_argmax(x, grid, spread=True)
            assert points.dtype == torch.float32
            torch.testing.assert_close(points, torch.stack([xs, ys], -1).flatten(1), rtol=0, atol=1e-5)
            torch.testing.assert_close(spread, entropy, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ["kpheat", "hourglass"])
def test_predict_spread_gives_predict_s_points(arch):
    torch.manual_seed(0)
    net = KeypointNet(KeypointNetConfig(arch=arch, layout="ibug68", image_size=32, width=4)).eval()
    x = torch.rand(3, 1, 32, 32)
    with torch.inference_mode():
        for flip in (False, True):
            points, spread = net.predict_spread(x, flip=flip)
            assert torch.allclose(points, net.predict(x, flip=flip), atol=1e-5)
            assert spread.shape == (3,) and ((spread > 0) & (spread <= torch.log(torch.tensor(64.0)) + 1e-4)).all()
    with pytest.raises(ValueError, match="no heatmaps"):
        KeypointNet(KeypointNetConfig(arch="kpnet", image_size=32, width=4)).predict_spread(x)
