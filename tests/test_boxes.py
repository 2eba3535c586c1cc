import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnvision.boxes import average_precision, box_iou, decode, encode, nms

coord = st.floats(0, 100, allow_nan=False)


@st.composite
def boxes(draw, n=3):
    out = []
    for _ in range(n):
        x0, y0 = draw(coord), draw(coord)
        out.append([x0, y0, x0 + draw(st.floats(1, 50)), y0 + draw(st.floats(1, 50))])
    return torch.tensor(out)


@settings(max_examples=50, deadline=None)
@given(a=boxes(), b=boxes())
def test_iou_is_symmetric_bounded_and_one_on_itself(a, b):
    m = box_iou(a, b)
    assert m.shape == (3, 3)
    torch.testing.assert_close(m, box_iou(b, a).t())
    assert (m >= 0).all() and (m <= 1 + 1e-6).all()
    torch.testing.assert_close(box_iou(a, a).diagonal(), torch.ones(3))


def test_iou_known_value():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[5.0, 0, 15, 10]])
    assert box_iou(a, b).item() == pytest.approx(50 / 150)


def test_encode_then_decode_recovers_the_boxes():
    truth = torch.tensor([[10.0, 12, 50, 60], [60, 8, 90, 40]])
    target = encode(truth, 12, 12, 8, scale=32)
    assert target[0].sum() > 0
    found, scores = decode(target, 8, 32, threshold=0.5)
    assert (scores == 1).all()
    # every decoded cell gives back exactly one of the true boxes
    assert (box_iou(found, truth).max(1).values > 0.999).all()
    kept = nms(found, scores + torch.rand(len(scores)) * 0.01)
    assert len(kept) == 2


def test_nms_keeps_the_best_of_overlapping_boxes():
    b = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 9, 10]])
    s = torch.tensor([0.9, 0.95, 0.5, 0.3])
    assert nms(b, s, iou=0.4).tolist() == [1, 2]
    assert nms(b, s, iou=0.99).tolist() == [1, 0, 2, 3]
    assert nms(torch.zeros(0, 4), torch.zeros(0)).tolist() == []


def test_average_precision_known_cases():
    truth = [torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[20.0, 20, 30, 30], [40, 40, 50, 50]])]
    perfect = [(t, torch.ones(len(t))) for t in truth]
    assert average_precision(perfect, truth) == {"ap50": pytest.approx(1.0), "recall50": pytest.approx(1.0)}
    # one miss, and a false positive ranked above the last hit
    dets = [(torch.tensor([[0.0, 0, 10, 10], [60, 60, 70, 70]]), torch.tensor([0.9, 0.8])),
            (torch.tensor([[20.0, 20, 30, 30]]), torch.tensor([0.7]))]
    r = average_precision(dets, truth)
    assert r["recall50"] == pytest.approx(2 / 3)
    # precision 1 at recall 1/3, 2/3 at recall 2/3 -> AP = 1/3 * 1 + 1/3 * 2/3
    assert r["ap50"] == pytest.approx(1 / 3 + 2 / 9)
    nothing = [(torch.zeros(0, 4), torch.zeros(0)), (torch.zeros(0, 4), torch.zeros(0))]
    assert average_precision(nothing, truth) == {"ap50": 0.0, "recall50": 0.0}
