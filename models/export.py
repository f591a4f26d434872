"""ONNX export: a checkpoint as one `.onnx` file that ONNX Runtime (or any ONNX runtime) can run.

The graph takes the *normalised* image batch `image` [B, 3, S, S] (float32, any B) and returns the
network's logits: `logits` [B] (sigmoid -> malignant probability) and, with a mask head,
`mask_logits` [B, 1, S, S] (sigmoid > 0.5 -> lesion, the rule of `models.inference`). Decoding,
padding, resizing and normalising stay outside, as `models.preprocess` does them; so that a deployer
need not guess them, the file's metadata carries the checkpoint's `busnet_config` (JSON: model,
preprocessing size/mean/std, decision threshold, weights sha256, and the temperature: the probability
the threshold is on is sigmoid(logits / temperature), or sigmoid(logits) when it is null).

TorchScript-based exporter (`dynamo=False`): the dynamo exporter needs `onnxscript`, which busnet
does not otherwise need. What exports, measured with the tiny preset: every Hybrid-MT-ESTAN variant
(hybrid, hybrid_noaaa, mt_estan, swin, swin_aaa) and the baselines densenet121, mobilenetv1_100,
mobilenetv2_100, resnet50, vit_base_patch16_224 and swinv2_base_window8_256, ONNX Runtime within
2e-7 of PyTorch. vgg16 does not: timm's pre-logits adaptive average pool to 7 x 7 from a map whose
side is no multiple of 7 (2 px at 64 px input, 8 at 256) has no ONNX operator.
"""

from __future__ import annotations

import io
import json

import torch
from torch import nn

OPSET = 17  # ONNX Runtime >= 1.12 runs it; LayerNorm is a single op from 17 on
INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "mask_logits")
CONFIG_KEY = "busnet_config"


class _Outputs(nn.Module):
    """The model's output dict as the tuple ONNX needs (mask_logits left out when None)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(image)
        return (out["logits"],) if out["mask_logits"] is None else (out["logits"], out["mask_logits"])


def export_onnx(model: nn.Module, config: dict) -> bytes:
    """The ONNX file of `model` (as loaded by `load_checkpoint`, with its `config`), in memory.

    Raises ValueError (its first line says which operator) when the network has an op ONNX lacks.
    """
    import onnx

    size = int(config["preprocessing"]["size"])
    wrapper = _Outputs(model).eval()  # BN running statistics: what inference uses
    outputs = list(OUTPUT_NAMES[: 2 if getattr(model, "has_segmentation", False) else 1])
    buffer = io.BytesIO()
    try:
        torch.onnx.export(
            wrapper,
            (torch.zeros(1, 3, size, size),),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *outputs)},
        )
    except Exception as exc:  # torch raises its own SymbolicValueError / UnsupportedOperatorError types
        raise ValueError(f"the network does not export to ONNX: {str(exc).strip().splitlines()[0]}") from exc
    graph = onnx.load_from_string(buffer.getvalue())
    entry = graph.metadata_props.add()
    entry.key, entry.value = CONFIG_KEY, json.dumps(config, sort_keys=True)
    return graph.SerializeToString()
