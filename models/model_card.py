"""The model card written beside every checkpoint (`model_card.md`), and the data summary serving shows.

Generated from what the checkpoint already records (config.json, metrics.json, lineage.json), so it
cannot disagree with them: the data (sources, content hash, split sizes), the recipe, the pretrained
weights by sha256, the metrics it was chosen by (test metrics with their intervals when a test was
recorded), intended use and limits. A model trained on synthetic data only says so in its card and
in `data_summary`, which GET /v1/model returns and the viewer shows beside every answer.
"""

from __future__ import annotations

from typing import Any

CARD = "model_card.md"
SYNTHETIC = "synthetic"
RECIPE_KEYS = ("preset", "variant", "backbone", "recipe", "epochs", "batch_size", "lr", "optimizer", "schedule")
RECIPE_KEYS += ("select", "fold", "input_size", "aaa_init", "w1", "alpha", "gamma", "seed")
CALIBRATION_KEYS = ("val_ece", "val_ece_calibrated", "val_sens_at_spec")  # shown under their own heading


def data_summary(lineage: dict) -> dict:
    """{"sources": {name: images}, "content_hash", "splits", "synthetic_only"} of a checkpoint's training data."""
    dataset = lineage.get("dataset") or {}
    sources = dataset.get("sources") or {}
    return {
        "sources": sources,
        "content_hash": dataset.get("content_hash"),
        "splits": {name: split.get("images") for name, split in (dataset.get("splits") or {}).items()},
        "synthetic_only": bool(sources) and set(sources) == {SYNTHETIC},
    }


def model_card(model: dict, metrics: dict, lineage: dict, weights_sha256: str, temperature: float | None = None) -> str:
    """Markdown of the card (see the module doc); `temperature`: config.json's (None: uncalibrated)."""
    name = model.get("variant", "?") + (f" ({model['backbone']})" if model.get("backbone") else "")
    data = data_summary(lineage)
    hyper = lineage.get("hyperparameters") or {}
    lines = [f"# Model card: busnet {name}, preset {model.get('preset')}", ""]
    if data["synthetic_only"]:
        lines += ["**Trained on synthetic images only: its answers on real ultrasound mean nothing.**", ""]
    lines += [
        "## Intended use",
        "Research on breast-ultrasound tumour classification (benign/malignant) and lesion segmentation: "
        "reproducing and extending Hybrid-MT-ESTAN. Not a medical device; not for diagnosis or patient care.",
        "",
        "## Data",
        f"- dataset content hash: `{data['content_hash']}`",
        "- sources (images): " + (", ".join(f"{k} {v}" for k, v in data["sources"].items()) or "not recorded"),
        "- split (images): "
        + (", ".join(f"{k} {v}" for k, v in data["splits"].items()) or "not recorded")
        + (f"; fold {hyper['fold']} held out" if hyper.get("fold") is not None else ""),
        "",
        "## Recipe",
        *(f"- {key}: {hyper[key]}" for key in RECIPE_KEYS if hyper.get(key) is not None),
        "",
        "## Weights",
        f"- this checkpoint: model.safetensors sha256 `{weights_sha256}`",
        *_pretrained(lineage.get("pretrained"), hyper.get("pretrained")),
        "",
        "## Metrics",
        *_metrics(metrics),
        "",
        "## Calibration and operating point",
        *_calibration(metrics, temperature, hyper.get("calibrate")),
        "",
        "## Limits",
        "- Public BUS datasets are small and from few devices; performance on another scanner, population or "
        "protocol is unknown until measured there.",
        "- Validation metrics chose this checkpoint and are optimistic; only a held-out test estimates performance.",
        "- The decision threshold was chosen on validation data (Youden's J); the paper's is 0.5.",
    ]
    return "\n".join(lines) + "\n"


def _pretrained(loaded: dict | None, spec: Any) -> list[str]:
    if not loaded:
        return [f"- encoders: randomly initialised (pretrained {spec or 'none'})"]
    return [f"- {part}: {w.get('name')} sha256 `{w.get('sha256')}`" for part, w in loaded.items()]


def _calibration(metrics: dict, temperature: float | None, asked: bool | None) -> list[str]:
    """What the probability means (temperature scaling or not) and the sensitivity at the operating
    specificity, as validation measured them when the checkpoint was written (`asked`: the run's
    --calibrate, None when its lineage does not say)."""
    from models.calibration import ECE_BINS
    from models.metrics import OPERATING_SPECIFICITY

    if temperature is None:
        why = (
            ": no temperature could be fitted on validation (one class, or every image on its right side of 0.5)"
            if asked
            else ""
        )
        lines = [f"- uncalibrated (T = 1): the probability is the network's own sigmoid{why}"]
    else:
        lines = [
            f"- temperature T = {temperature:.3g}, fitted on the validation split (NLL of logit / T): the probability "
            "is sigmoid(logit / T), and the decision threshold is on that scale"
        ]
    if _finite(metrics.get("val_ece")):
        after = metrics.get("val_ece_calibrated")
        lines.append(
            f"- validation ECE ({ECE_BINS} bins): {metrics['val_ece']:.3g} uncalibrated"
            + (f", {after:.3g} calibrated" if after is not None else "")
        )
    if _finite(metrics.get("val_sens_at_spec")):
        lines.append(
            f"- validation sensitivity at {OPERATING_SPECIFICITY:.0%} specificity: {metrics['val_sens_at_spec']:.3g}; "
            "`busnet evaluate` reports it on the test split with its interval and threshold"
        )
    return lines


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and value == value and abs(value) != float("inf")


def _metrics(metrics: dict) -> list[str]:
    test = {k: v for k, v in metrics.items() if k.startswith("test_")}
    val = {
        k: v
        for k, v in metrics.items()
        if k.startswith("val_") and k not in CALIBRATION_KEYS and isinstance(v, (int, float))
    }
    lines = [f"- chosen at epoch {metrics.get('epoch')} on validation: " + _values(val)] if val else []
    if test:
        lines.append("- test: " + _values(test))
    else:
        lines.append("- test: not measured when this checkpoint was written (`busnet evaluate` writes them)")
    return lines


def _values(values: dict) -> str:
    shown = []
    for key, value in values.items():
        if isinstance(value, dict):  # {"value", "low", "high"}: a bootstrap interval
            interval = f" [{value.get('low'):.3g}, {value.get('high'):.3g}]" if value.get("low") is not None else ""
            shown.append(f"{key} {value.get('value'):.3g}{interval}")
        elif value == value:  # not NaN
            shown.append(f"{key} {value:.3g}")
    return ", ".join(shown)
