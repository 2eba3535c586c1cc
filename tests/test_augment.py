import pytest



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


def test_parse_augment_changes_named_fields_only():
    from cnnvision.data.augment import AugmentConfig, make_augment, parse_augment
    changes = parse_augment("rotate=6, shift=0.03,flip=0")
    assert changes == {"rotate": 6.0, "shift": 0.03, "flip": False}
    cfg = make_augment(changes, AugmentConfig())
    assert (cfg.rotate, cfg.shift, cfg.flip) == (6.0, 0.03, False)
    assert (cfg.scale, cfg.brightness) == (AugmentConfig().scale, AugmentConfig().brightness)
    assert make_augment(True, AugmentConfig()) == AugmentConfig() and make_augment(False, AugmentConfig()) is None


@pytest.mark.parametrize("spec, message", [
    ("spin=3", "'spin' is not one of flip, rotate"), ("rotate=-1", "rotate must be from 0 to 180, not '-1'"),
    ("shift", "shift must be a number >= 0, not ''"), ("scale=nan", "scale must be"),
    ("flip=2", "flip must be 0 or 1"), ("shift=inf", "shift must be"),
    ("scale=1", "scale must be from 0 to below 1"), ("rotate=190", "rotate must be from 0 to 180")])
def test_parse_augment_refuses_bad_specs(spec, message):
    from cnnvision.data.augment import parse_augment
    from cnnvision.errors import InputError
    with pytest.raises(InputError, match=message):
        parse_augment(spec)
