"""The network really learns: the tiny hybrid overfits a fixed batch of synthetic lesions.

Bright speckled background, one dark ellipse per image (its mask), label = whether the lesion is
large; Adam lr 1e-3 with the paper's loss (3 * focal + Dice). Pass: within MAX_STEPS the loss on
the batch falls by more than 80% and the Dice of the thresholded masks exceeds 0.8 (eval mode).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.losses import multitask_loss
from models.metrics import segmentation_metrics
from models.network import build_model
from models.preprocess import Preprocessing, preprocess_image

SIZE = 64
BATCH = 4
MAX_STEPS = 150
CHECK_EVERY = 10


def synthetic_lesions(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images [n,3,S,S] normalised as in production, masks [n,1,S,S], labels [n]) of dark blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    pre = Preprocessing(size=size)
    images, masks, labels = [], [], []
    for index in range(n):
        large = index % 2
        radii = rng.uniform(0.22, 0.3, 2) * size if large else rng.uniform(0.1, 0.15, 2) * size
        centre = rng.uniform(0.35, 0.65, 2) * size
        mask = ((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2 <= 1.0
        gray = rng.normal(200, 15, (size, size))
        gray[mask] = rng.normal(60, 15, int(mask.sum()))
        images.append(preprocess_image(np.clip(gray, 0, 255).astype(np.uint8), pre))
        masks.append(mask[None].astype(np.float32))
        labels.append(float(large))
    return (
        torch.from_numpy(np.stack(images)),
        torch.from_numpy(np.stack(masks)),
        torch.tensor(labels, dtype=torch.float32),
    )


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine more threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def batch_loss_and_dice(model, images, masks, labels) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    model.train()
    loss = multitask_loss(outputs, labels, masks).total.item()
    predicted = (outputs["mask_logits"] > 0).numpy()
    return loss, segmentation_metrics(masks.numpy(), predicted)["dsc"]


def test_tiny_hybrid_overfits_a_batch_of_synthetic_lesions():
    torch.manual_seed(0)
    images, masks, labels = synthetic_lesions(BATCH, SIZE, seed=0)
    model = build_model("tiny", "hybrid", input_size=SIZE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    initial_loss, initial_dice = batch_loss_and_dice(model, images, masks, labels)
    history = []
    for step in range(1, MAX_STEPS + 1):
        optimizer.zero_grad()
        multitask_loss(model(images), labels, masks).total.backward()
        optimizer.step()
        if step % CHECK_EVERY == 0:
            loss, dice = batch_loss_and_dice(model, images, masks, labels)
            history.append((step, round(loss, 4), round(dice, 3)))
            if loss < 0.2 * initial_loss and dice > 0.8:
                break
    loss, dice = history[-1][1:]
    assert loss < 0.2 * initial_loss, f"loss {initial_loss:.4f} -> {history}"
    assert dice > 0.8, f"Dice {initial_dice:.3f} -> {history}"
