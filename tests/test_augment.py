

def test_colour_jitter_keeps_range_and_turns_some_pictures_grey():
    import torch
    from cnnvision.data.augment import jitter_colour
    x = torch.rand(200, 3, 8, 8)
    out = jitter_colour(x, torch.Generator().manual_seed(0), gain=0.1, grey=0.5)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    grey = (out[:, 0] == out[:, 1]).all((1, 2)) & (out[:, 1] == out[:, 2]).all((1, 2))
    assert 60 < grey.sum() < 140
    kept = ~grey[:, None, None, None] & (x > 0.01) & (out < 1)  # colour pictures, unclipped pixels
    ratio = out[kept] / x[kept]
    assert (ratio > 0.899).all() and (ratio < 1.101).all() and ratio.std() > 0.02
