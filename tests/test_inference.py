"""models.inference: the one step "batch -> probabilities + masks" and the one mask rule.

The step is checked against the network's own forward pass (sigmoid of its logits); its three
callers are checked end to end elsewhere: validation in tests/test_train.py, `busnet evaluate` in
tests/test_evaluate.py, the Serve replica in tests/test_serve_units.py and tests/test_serve.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import build_model
from models.inference import MASK_THRESHOLD, binarize, predict
from models.preprocess import restore_mask

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {variant: build_model("tiny", variant) for variant in ("hybrid", "swin")}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)


def test_outputs_are_the_networks_own_forward_pass(models, images):
    model = models["hybrid"].train()  # the step switches to eval itself: dropout off, BN running stats
    got = predict(model, images, "cpu")
    assert not model.training
    with torch.no_grad():
        out = model(torch.from_numpy(images))
    assert got.probs.shape == (3,) and got.probs.dtype == np.float32
    assert got.mask_probs.shape == (3, 64, 64) and got.mask_probs.dtype == np.float32
    np.testing.assert_array_equal(got.probs, torch.sigmoid(out["logits"]).numpy())
    np.testing.assert_array_equal(got.mask_probs, torch.sigmoid(out["mask_logits"])[:, 0].numpy())
    torch.testing.assert_close(got.outputs["logits"], out["logits"], rtol=0, atol=0)  # for a loss
    torch.testing.assert_close(got.outputs["mask_logits"], out["mask_logits"], rtol=0, atol=0)


def test_a_tensor_batch_gives_what_the_same_array_gives(models, images):
    from_array = predict(models["hybrid"], images, torch.device("cpu"))
    from_tensor = predict(models["hybrid"], torch.from_numpy(images).double(), "cpu", torch.float32)
    np.testing.assert_array_equal(from_array.probs, from_tensor.probs)
    np.testing.assert_array_equal(from_array.mask_probs, from_tensor.mask_probs)


def test_a_classifier_only_network_has_no_masks(models, images):
    got = predict(models["swin"], images, "cpu")
    assert got.probs.shape == (3,) and got.mask_probs is None and got.outputs["mask_logits"] is None
    with torch.no_grad():
        expected = torch.sigmoid(models["swin"].eval()(torch.from_numpy(images))["logits"]).numpy()
    np.testing.assert_array_equal(got.probs, expected)


def test_half_precision_runs_under_autocast_and_answers_in_float32(models, images):
    full = predict(models["hybrid"], images, "cpu")
    half = predict(models["hybrid"], images, "cpu", torch.bfloat16)
    assert half.probs.dtype == np.float32 and half.mask_probs.dtype == np.float32
    assert half.outputs["logits"].dtype == torch.float32
    assert not np.array_equal(half.mask_probs, full.mask_probs)  # it did run in bf16
    np.testing.assert_allclose(half.probs, full.probs, atol=0.05)


def test_one_mask_rule_probability_above_one_half():
    assert MASK_THRESHOLD == 0.5
    above = np.nextafter(np.float32(0.5), np.float32(1))
    np.testing.assert_array_equal(binarize(np.array([0.0, 0.5, above, 1.0], np.float32)), [False, False, True, True])
    # restore_mask (serving) applies the same rule after resizing to the image's own size
    assert (restore_mask(np.full((8, 8), 0.5, np.float32), 5, 7) == 0).all()
    assert (restore_mask(np.full((8, 8), above, np.float32), 5, 7) == 255).all()
