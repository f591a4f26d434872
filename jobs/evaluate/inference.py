"""Batch inference for `busnet evaluate` and `busnet predict`: a Ray Data callable class that loads the
checkpoint once per actor and turns batches of preprocessed images into probabilities, masks and
per-image scores through `models.inference.predict`, the step validation and serving use too, with the
checkpoint's temperature (`models.calibration`): the probability compared with its threshold."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

INFERENCE_BATCH = 16  # images per forward pass of evaluate and batch predict by default (`--batch-size`)

if TYPE_CHECKING:
    from models.inference import Prediction


class BatchPredictor:
    """Ray Data callable class: loads the checkpoint once per actor, then predicts batches."""

    def __init__(self, checkpoint_uri: str, weights_sha256: str | None = None):
        """`checkpoint_uri`: the version the driver resolved; `weights_sha256`: the weights it recorded."""
        import torch

        from models import load_checkpoint
        from models.calibration import temperature_of

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, self.config = load_checkpoint(checkpoint_uri, device=self.device, weights_sha256=weights_sha256)
        self.temperature = temperature_of(self.config)  # the probability is calibrated as it is served
        pre = self.config["preprocessing"]
        self.mean = np.asarray(pre["mean"], dtype=np.float32)[:, None, None]
        self.std = np.asarray(pre["std"], dtype=np.float32)[:, None, None]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from models.inference import predict

        result = self.scores(batch, predict(self.model, batch["image"], self.device, temperature=self.temperature))
        if "pred_mask" in result:
            result["display"] = self._display(np.asarray(batch["image"]))
        return result

    def scores(self, batch: dict[str, np.ndarray], prediction: Prediction) -> dict[str, np.ndarray]:
        """Per image: the probability (and the network's own, before the temperature), and with a mask
        head the predicted and true masks at the model's input size and their DSC and JI (NaN without a
        true mask)."""
        from models.calibration import calibrated
        from models.inference import binarize
        from models.metrics import segmentation_metrics

        result = {
            "image_id": batch["image_id"],
            "source": batch["source"],
            "label": np.asarray(batch["label"]).astype(np.int8),
            "prob": prediction.probs.astype(np.float64),
            "raw_prob": calibrated(prediction.outputs["logits"].cpu().numpy()),  # before the temperature
            "has_mask": np.asarray(batch["has_mask"], dtype=bool),
        }
        if prediction.mask_probs is None:
            return result
        predicted = binarize(prediction.mask_probs)
        truth = np.asarray(batch["mask"])[:, 0] > 0.5
        scores = [
            segmentation_metrics(truth[i : i + 1], predicted[i : i + 1]) if has else None
            for i, has in enumerate(result["has_mask"])
        ]
        result["dsc"] = np.array([s["dsc"] if s else np.nan for s in scores], dtype=np.float64)
        result["ji"] = np.array([s["ji"] if s else np.nan for s in scores], dtype=np.float64)
        result["pred_mask"] = predicted.astype(np.uint8)
        result["true_mask"] = truth.astype(np.uint8)
        return result

    def _display(self, images: np.ndarray) -> np.ndarray:
        """The network's input back in [0, 255] gray (ultrasound is gray), for the overlays."""
        pixels = np.clip(images * self.std + self.mean, 0.0, 1.0).mean(axis=1)
        return np.round(pixels * 255).astype(np.uint8)
