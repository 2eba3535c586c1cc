"""ONNX export: onnxruntime's output equals torch's, for any batch size."""
import numpy as np
import pytest
import torch

from cnnvision import checkpoint
from cnnvision.cli import main
from cnnvision.nets import KeypointNet, KeypointNetConfig

ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("arch", ["basic_cnn", "kpnet", "kpheat", "hourglass"])
def test_onnx_matches_torch(tmp_path, arch):
    net = KeypointNet(KeypointNetConfig(arch=arch, image_size=32, width=8)).eval()
    path = tmp_path / "net.pt"
    checkpoint.save(path, {"net": {"task": "keypoints", "config": net.cfg.__dict__}, "model": net.state_dict()})
    onnx_path = tmp_path / "net.onnx"
    assert main(["export", "--checkpoint", str(path), "--onnx", str(onnx_path)]) == 0
    session = ort.InferenceSession(str(onnx_path))
    for batch in (1, 5):
        x = torch.rand(batch, 1, 32, 32)
        got = session.run(None, {"images": x.numpy()})
        with torch.inference_mode():
            want = net.predict(x, flip=False).numpy()
        assert got[0].shape == (batch, 15, 2)
        np.testing.assert_allclose(got[0], want, atol=1e-3, rtol=1e-4)
        if net.has_spread:  # heatmap nets: the spread of their heatmaps is a second output
            with torch.inference_mode():
                np.testing.assert_allclose(got[1], net.predict_spread(x)[1].numpy(), atol=1e-4, rtol=1e-4)
        else:
            assert len(got) == 1


@pytest.mark.parametrize("training", [True, False])
def test_export_leaves_the_net_in_the_mode_it_found(tmp_path, training):
    """The exporter switches every submodule to eval mode while it traces; a net being trained
    must come back training (and one in eval mode stay so)."""
    from cnnvision.export import export_onnx
    net = KeypointNet(KeypointNetConfig(arch="kpnet", image_size=32, width=4)).train(training)
    export_onnx(net, tmp_path / "n.onnx")
    assert all(m.training == training for m in net.modules())


@pytest.mark.parametrize("name", checkpoint.PRETRAINED)
def test_export_every_shipped_model(tmp_path, name):
    """Dynamic batch for all; dynamic height and width too for the fully convolutional ones."""
    onnx_path = tmp_path / f"{name}.onnx"
    assert main(["export", "--pretrained", name, "--onnx", str(onnx_path)]) == 0
    session = ort.InferenceSession(str(onnx_path))
    net = checkpoint.load_net(pretrained=name)
    c, s = net.cfg.in_channels, net.cfg.image_size
    sizes = [(s, s), (96, 160)] if net.task in ("segmentation", "detection") else [(s, s)]
    for batch, (h, w) in zip((3, 1), sizes * 2):
        x = torch.rand(batch, c, h, w)
        with torch.inference_mode():
            want = net.predict(x, flip=False).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=2e-3)
