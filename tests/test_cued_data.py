"""The positive-control source ``data="cued"`` (kwlab.experiments.data_cued): what the generator promises."""

import pytest
import torch

from kwlab.experiments.data import CUED_CLASSES, load_data
from kwlab.experiments.data_cued import _textons, cued_images

FRAME = 2


def test_same_seed_same_images_other_seed_other_images():
    a, b, c = cued_images(64, seed=3), cued_images(64, seed=3), cued_images(64, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


def test_label_is_the_texton_of_the_cued_channel_and_classes_are_balanced():
    d = cued_images(240, num_classes=8, seed=0)
    assert torch.equal(d.textons[torch.arange(240), d.cues], d.labels)
    assert torch.bincount(d.labels, minlength=8).tolist() == [30] * 8
    assert torch.bincount(d.cues, minlength=3).tolist() == [80] * 3


def test_the_cue_tints_the_whole_image_by_default():
    d = cued_images(300, seed=1)
    x = d.images.double() / 255
    assert torch.equal(x.reshape(300, -1, 3).mean(1).argmax(1), d.cues)  # the brightest channel is the cue


def test_with_a_frame_the_cue_is_read_from_the_frame_alone():
    d = cued_images(300, seed=1, noise=0.05, cue_strength=0.3, frame=FRAME)
    x = d.images.double() / 255  # (N, S, S, 3)
    frame_mean = torch.cat([x[:, :FRAME].reshape(300, -1, 3), x[:, -FRAME:].reshape(300, -1, 3)], 1).mean(1)
    assert torch.equal(frame_mean.argmax(1), d.cues)  # the frame's brightest channel is the cue
    inside = x[:, FRAME:-FRAME, FRAME:-FRAME].reshape(300, -1, 3).mean(1)
    # inside the frame no channel is lifted by the cue: the cued channel's mean is not systematically higher
    lift = inside[torch.arange(300), d.cues] - inside.mean(1)
    assert abs(float(lift.mean())) < 0.01


def test_texture_in_a_channel_is_its_texton_placed_at_spikes():
    """Reference: rebuild one noise-free image's inside channel by stamping its texton at every spike."""
    d = cued_images(1, seed=5, noise=0.0, cue_strength=0.3, contrast=0.5, image_size=12, frame=FRAME)
    t = _textons(4)  # cued_images draws from num_classes=4 textons by default
    x = d.images[0].double() / 255
    inside = x[FRAME:-FRAME, FRAME:-FRAME]
    for ch in range(3):
        # the texture is zero-mean per texton; a stamped texton correlates best with its own pattern
        patch = inside[..., ch]
        scores = []
        for k in range(4):
            resp = torch.nn.functional.conv2d(patch[None, None] - patch.mean(), t[k][None, None], padding=1)
            scores.append(float(resp.clamp_min(0).pow(2).sum()))
        assert int(torch.tensor(scores).argmax()) == int(d.textons[0, ch])


def test_load_data_cued_is_the_same_for_every_run_and_carries_the_cues():
    a = load_data("cued", train_samples=50, test_samples=30, seed=0)
    b = load_data("cued", train_samples=50, test_samples=30, seed=7)
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_labels, b.test_labels)
    assert a.num_classes == CUED_CLASSES and a.image_size == 16
    assert a.test_cues is not None and a.test_cues.shape == (30,)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_samples": 0}, "num_samples"),
        ({"num_classes": 1}, "num_classes"),
        ({"image_size": 6}, "image_size"),
        ({"noise": float("nan")}, "noise"),
        ({"cue_strength": True}, "cue_strength"),
        ({"density": 0}, "density"),
        ({"frame": 7}, "frame"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, name):
    args = {"num_samples": 4, **kwargs}
    with pytest.raises(ValueError, match=name):
        cued_images(**args)
