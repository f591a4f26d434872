"""The evaluation report: report.md with Table 2's metrics, and the plots (matplotlib, Agg).

Numbers come from `jobs.evaluate.run`'s metrics dict; this module only lays them out: percent with one
decimal and F1 as a fraction (the paper's units), each with its bootstrap 95% interval, the paper's
own rows beside ours, the calibration (ECE before and after the checkpoint's temperature) and the
sensitivity at a stated specificity, and four figures: roc.png, confusion.png, reliability.png,
overlays.png. Every group has two
rows, one at the checkpoint's (validation-chosen) threshold and one at the paper's 0.5 ("paper
protocol"); the paper's AUC column is `auc_hard` ((Sens + Spec) / 2), labelled as such, with the
ROC-AUC of the probabilities beside it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jobs.evaluate.results import OverlayCase, OverlayPool, Predictions
from models.calibration import TEMPERATURE_RANGE
from models.metrics import METRICS, PAPER_THRESHOLD, SEGMENTATION_METRICS

# The two AUCs named for what they are; the other titles are the paper's: words title-cased, acronyms upper-cased.
TITLES = {"auc_hard": "AUC (hard, paper)", "auc": "ROC-AUC"}
# (metric, column title) for every metric, in models.metrics' order.
COLUMNS = tuple((k, TITLES.get(k) or (k.title() if k in ("acc", "sens", "spec") else k.upper())) for k in METRICS)
# The columns of the paper's Tables 2 and 3, in its order: its AUC is auc_hard; it has no ROC-AUC.
PAPER_COLUMNS = ("acc", "sens", "spec", "f1", "auc_hard", "fnr", "fpr", "dsc", "ji")
# Paper Tables 2 and 3 (3,320 images of HMSS, BUSI, BUSIS, Dataset B), in the paper's units and PAPER_COLUMNS.
PAPER_ROWS = {
    "hybrid": ("Hybrid-MT-ESTAN (paper, Table 2)", (82.8, 86.4, 79.2, 0.86, 82.8, 13.6, 20.8, 84.1, 75.7)),
    "hybrid_noaaa": (
        "MT-ESTAN + Swin, no AAA (paper, Table 3)",
        (80.3, 84.2, 76.3, 0.83, 80.2, 15.8, 23.7, 82.3, 73.6),
    ),
    "mt_estan": ("MT-ESTAN (paper, Table 2)", (78.6, 83.7, 72.6, 0.83, 78.2, 16.3, 27.4, 78.2, 69.3)),
    "swin": ("Swin Transformer (paper, Table 2)", (77.4, 72.6, 82.5, 0.74, 77.6, 27.4, 17.5, None, None)),
}
# Table 2's single-task baselines that timm has, by backbone name prefix (Swin's row is Table 3's);
# values in the paper's units and PAPER_COLUMNS, as PAPER_ROWS.
PAPER_BASELINE_ROWS = {
    "mobilenet": ("MobileNet (paper, Table 2)", (71.0, 82.0, 61.0, 0.74, 71.5, 18.0, 39.0, None, None)),
    "densenet121": ("DenseNet121 (paper, Table 2)", (73.0, 74.0, 71.0, 0.73, 72.5, 26.0, 29.0, None, None)),
    "vit_": ("ViT (paper, Table 2)", (72.1, 74.1, 69.3, 0.73, 71.7, 25.9, 30.7, None, None)),
    "swin": PAPER_ROWS["swin"],
}
PAPER_PROTOCOL = "paper protocol"
AUC_NOTE = "AUC (hard, paper) = (Sens + Spec) / 2 at the row's threshold, ROC-AUC from the probabilities"
GROUND_TRUTH_COLOUR = "#00e676"  # green, solid line
PREDICTION_COLOUR = "#ff4081"  # pink, dashed line: the two differ in hue and in line style


def paper_row(variant: str | None, backbone: str | None = None) -> tuple[str, tuple] | None:
    """The paper's row for a variant, or for a baseline's timm backbone; None when the paper has none."""
    if backbone is None:
        return PAPER_ROWS.get(variant)
    return next((row for prefix, row in PAPER_BASELINE_ROWS.items() if backbone.startswith(prefix)), None)


def write_report(out_dir: Path, metrics: dict, predictions: Predictions, overlays: OverlayPool) -> list[str]:
    """Write report.md and the figures into `out_dir`; return the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    figures = ["roc.png", "confusion.png", "reliability.png"]
    plot_roc(out_dir / "roc.png", predictions, metrics)
    plot_confusion(out_dir / "confusion.png", metrics["overall"]["confusion"], metrics["threshold"])
    plot_reliability(out_dir / "reliability.png", metrics["calibration"])
    if metrics["segmentation"]["evaluated"] and (overlays.best or overlays.worst):
        plot_overlays(out_dir / "overlays.png", overlays)
        figures.append("overlays.png")
    (out_dir / "report.md").write_text(render_markdown(metrics, figures))
    return ["report.md", *figures]


def _cell(key: str, entry: dict | None) -> str:
    if entry is None or entry.get("value") is None:
        return "n/a"
    scale, digits = (1.0, 2) if key == "f1" else (100.0, 1)
    text = f"{entry['value'] * scale:.{digits}f}"
    if entry.get("low") is not None:
        text += f" [{entry['low'] * scale:.{digits}f}, {entry['high'] * scale:.{digits}f}]"
    return text


def render_markdown(metrics: dict, figures: list[str]) -> str:
    """report.md: what was evaluated, the table (ours per group + the paper's row), notes, figures."""
    evaluated = metrics["evaluated"]
    model = evaluated["model"]
    has_branch = metrics["segmentation"]["model_has_segmentation"]
    overall = metrics["overall"]
    boot = metrics["bootstrap"]
    fold = f", fold {evaluated['fold']}" if evaluated["fold"] is not None else ""
    chosen = threshold_label(metrics["threshold"], metrics["threshold_source"])
    lines = [
        f"# Evaluation: {model.get('preset')}/{model.get('variant')} on the {evaluated['split']} split",
        "",
        f"- **Model**: `{evaluated['checkpoint']}` (preset `{model.get('preset')}`, variant "
        f"`{model.get('variant')}`, input {model.get('input_size')} px, weights sha256 "
        f"`{str(evaluated.get('weights_sha256'))[:12]}`)",
        f"- **Data**: the `{evaluated['split']}` split{fold} of `{evaluated['data']}` (content hash "
        f"`{str(evaluated.get('dataset_content_hash'))[:12]}`): {overall['n']} images "
        f"({overall['n_benign']} benign, {overall['n_malignant']} malignant) from {overall['n_cases']} cases, "
        f"{overall['n_with_mask']} with a ground-truth mask",
        f"- **Decision thresholds**: {chosen} "
        f"and {threshold_label(metrics['paper_protocol']['threshold'], PAPER_PROTOCOL)}; "
        "a malignant probability >= threshold is called malignant",
        f"- **Generated**: {metrics['created_at']}",
        "",
        *_training(evaluated.get("lineage") or {}),
        "## Table 2 metrics",
        "",
        "Percent, F1 as a fraction (the paper's units). In brackets: 95% bootstrap interval "
        f"({boot['resamples']} resamples of whole cases, seed {boot['seed']}, percentile method)."
        if boot["resamples"]
        else "Percent, F1 as a fraction (the paper's units). Bootstrap intervals were turned off.",
        "",
    ]
    lines += table_lines(metrics)
    lines += ["", "## Calibration and operating point", "", *calibration_lines(metrics)]
    lines += ["", "## Notes", ""] + [f"- {note}" for note in _notes(metrics, has_branch)]
    lines += ["", "## Figures", ""]
    captions = {
        "roc.png": f"ROC curve; the dot is the operating point at threshold {chosen}, the square the "
        "one at the paper's.",
        "confusion.png": f"Confusion matrix at threshold {chosen}: counts and percent of each true class.",
        "reliability.png": "Reliability diagram: per probability bin, the fraction of malignant images against "
        "the mean malignant probability (on the diagonal: calibrated), before and after temperature scaling; "
        "below, the images per bin.",
        "overlays.png": "Best and worst segmentations by Dice, at the model's input resolution: ground "
        "truth solid green, prediction dashed pink and shaded.",
    }
    for figure in figures:
        lines += [f"![{figure[:-4]}]({figure})", "", captions[figure], ""]
    lines += ["Machine-readable: `metrics.json`; one row per image: `predictions.csv`.", ""]
    return "\n".join(lines)


def calibration_lines(metrics: dict) -> list[str]:
    """Markdown: the temperature (or "uncalibrated"), the ECE before/after, the operating point."""
    block, point = metrics["calibration"], metrics["operating_point"]
    temperature = block["temperature"]
    if temperature is None:
        lines = [
            "- **Probability: uncalibrated**: the checkpoint has no temperature (T = 1); the malignant probability "
            "is the network's own sigmoid."
        ]
    else:
        bound = " (a bound of the fit: validation could not pin it down)" if temperature in TEMPERATURE_RANGE else ""
        lines = [
            f"- **Probability: calibrated**, temperature T = {temperature:.3g}{bound} (fitted on the validation split "
            "when the checkpoint was trained): every probability and threshold in this report is sigmoid(logit / T)."
        ]
    lines.append(
        f"- **Expected calibration error** ({block['bins']} equal-width bins, percent): "
        f"{_cell('ece', block['uncalibrated']['ece'])} uncalibrated"
        + (f", {_cell('ece', block['calibrated']['ece'])} calibrated" if block["calibrated"] else "")
        + "; 0 is perfect (see reliability.png)."
    )
    target = f"{point['specificity']:.0%}"
    if point["sens"]["value"] is None:
        lines.append(f"- **Sensitivity at {target} specificity**: n/a (this split lacks a class).")
    else:
        where = (
            f"at threshold {point['threshold']:.3g} on this split (specificity there {point['spec']:.1%})"
            if point["threshold"] is not None
            else "only by calling no image malignant"
        )
        lines.append(f"- **Sensitivity at {target} specificity**: {_cell('sens', point['sens'])} percent, {where}.")
    return lines


def _training(lineage: dict) -> list[str]:
    """How the checkpoint was trained (preset, recipe, weights, selection), with the warnings of
    jobs.evaluate.protocol; nothing for a checkpoint whose lineage does not say."""
    from jobs.evaluate.protocol import header

    hyper = lineage.get("hyperparameters")
    return [*header(hyper), ""] if hyper else []


def threshold_label(value: float, source: str) -> str:
    """How a table names a decision threshold: its value and where it came from."""
    origin = {"checkpoint": "validation"}.get(source, source)  # a checkpoint's threshold is chosen on validation
    return f"{_threshold_text(value)} ({origin})"


def _threshold_text(value: float) -> str:
    """3 significant digits, more where 3 would show the paper's 0.5 for another value: a large
    temperature squeezes every calibrated probability, the threshold too, towards 0.5."""
    for digits in (3, 4, 5, 6):
        text = f"{value:.{digits}g}"
        if value == PAPER_THRESHOLD or float(text) != PAPER_THRESHOLD:
            return text
    return repr(value)


def table_lines(metrics: dict) -> list[str]:
    """The metrics table (markdown): all images, then each source, each at the chosen threshold (the
    checkpoint's or --threshold) and at the paper's (paper protocol); then the paper's row(s)."""
    model = metrics["evaluated"]["model"]
    has_branch = metrics["segmentation"]["model_has_segmentation"]
    columns = [(k, name) for k, name in COLUMNS if has_branch or k not in SEGMENTATION_METRICS]
    lines = [
        "| | threshold | n | " + " | ".join(name for _, name in columns) + " |",
        "|---|---|---:|" + "---:|" * len(columns),
    ]
    paper = metrics["paper_protocol"]
    chosen = threshold_label(metrics["threshold"], metrics["threshold_source"])
    protocol = threshold_label(paper["threshold"], PAPER_PROTOCOL)
    for name, group, at_paper in [
        ("**all**", metrics["overall"], paper["overall"]),
        *((source, group, paper["per_source"][source]) for source, group in metrics["per_source"].items()),
    ]:
        for label, values in ((chosen, group), (protocol, at_paper)):
            cells = [_cell(k, values["metrics"].get(k)) for k, _ in columns]
            lines.append(f"| {name} | {label} | {values['n']} | " + " | ".join(cells) + " |")
    own = paper_row(model.get("variant"), model.get("backbone")) or PAPER_ROWS["hybrid"]
    for title, values in dict.fromkeys([own, PAPER_ROWS["hybrid"]]):
        reported = dict(zip(PAPER_COLUMNS, values))
        cells = [_paper_cell(k, reported.get(k)) for k, _ in columns]
        lines.append(f"| *{title}* | {paper['threshold']:.3g} | - | " + " | ".join(cells) + " |")
    return lines


def _paper_cell(key: str, value: float | None) -> str:
    """A value of the paper's tables ("-" where it reports none: no ROC-AUC, no DSC/JI for swin)."""
    return "-" if value is None else (f"{value:.2f}" if key == "f1" else f"{value:.1f}")


def render_summary(metrics: dict) -> str:
    """The console summary of `busnet evaluate`: the table and where the report is."""
    boot = metrics["bootstrap"]
    interval = f"[95% CI, {boot['resamples']} case resamples]" if boot["resamples"] else "(no intervals)"
    title = f"Table 2 metrics, percent (F1 as fraction) {interval}; {AUC_NOTE}:"
    return "\n".join([title, *table_lines(metrics), *calibration_lines(metrics)])


def _notes(metrics: dict, has_branch: bool) -> list[str]:
    segmentation = metrics["segmentation"]
    boot = metrics["bootstrap"]
    notes = [
        "The paper's rows are its test results on 3,320 images pooled from HMSS, BUSI, BUSIS and "
        "Dataset B with ImageNet-pretrained encoders at 256 px; compare with care when the data, "
        "the preset or the pretraining differ.",
        f"{AUC_NOTE}: the authors' code calls roc_auc_score on the 0/1 "
        "predictions, so the paper's AUC column is comparable with AUC (hard, paper) only.",
        f"Each group has a row at {threshold_label(metrics['threshold'], metrics['threshold_source'])} and a "
        f"row at the paper's {metrics['paper_protocol']['threshold']:.3g} (paper protocol): Acc, Sens, Spec, "
        "F1, AUC (hard, paper), FNR and FPR depend on the threshold; ROC-AUC, DSC and JI do not.",
    ]
    if not has_branch:
        notes.append("DSC and JI are not reported: this classifier-only variant has no segmentation branch.")
    elif segmentation["evaluated"]:
        notes.append(
            f"DSC and JI are per-image means over the images with a ground-truth mask, scored at the "
            f"model's input resolution (ground truth zero-padded to a square and resized with nearest "
            f"neighbour; prediction = sigmoid > {metrics['mask_threshold']}). An image where both masks "
            "are empty counts as a perfect match. Images without a mask count for classification only."
        )
    else:
        notes.append(f"DSC and JI: {segmentation['reason']}.")
    for name, group in [("all", metrics["overall"]), *metrics["per_source"].items()]:
        if group.get("segmentation_note") and has_branch and segmentation["evaluated"]:
            notes.append(f"{name}: DSC and JI {group['segmentation_note']}.")
    if boot["resamples"]:
        notes.append(
            "Intervals resample whole cases (patients), so images of one case stay together; "
            + (
                "here every case has one image, so this equals the image bootstrap."
                if boot["max_images_per_case"] == 1
                else f"here a case has up to {boot['max_images_per_case']} images."
            )
        )
        notes.append(
            "A resample in which a metric is undefined (no benign or no malignant image "
            "drawn, no mask) is left out of that metric's interval; metrics.json says how "
            "many resamples each interval used (`valid`)."
        )
    undefined = [
        k
        for k, entry in metrics["overall"]["metrics"].items()
        if k not in SEGMENTATION_METRICS and (entry is None or entry.get("value") is None)
    ]
    if undefined:
        notes.append(f"n/a for {', '.join(undefined)}: undefined on this split (e.g. one class only).")
    return notes


def plot_roc(path: Path, predictions: Predictions, metrics: dict) -> None:
    """ROC of all images (and of each source when there are several) with the operating points at both
    thresholds."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5.5, 5.5), dpi=120)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1, label="chance")
    sources = sorted(set(predictions.source.tolist()))
    groups = [("all", np.ones(len(predictions.label), bool), metrics["overall"])]
    if len(sources) > 1:
        groups += [(s, predictions.source == s, metrics["per_source"][s]) for s in sources]
    for index, (name, selected, group) in enumerate(groups):
        labels = predictions.label[selected]
        if len(set(labels.tolist())) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, predictions.prob[selected])
        auc = group["metrics"]["auc"]
        text = f"{name} (n={group['n']}): ROC-AUC {auc['value']:.3f}"
        if auc.get("low") is not None:
            text += f" [{auc['low']:.3f}, {auc['high']:.3f}]"
        ax.plot(
            fpr,
            tpr,
            linewidth=2.2 if index == 0 else 1.2,
            alpha=1.0 if index == 0 else 0.8,
            color="black" if index == 0 else None,
            label=text,
        )
    paper = metrics["paper_protocol"]
    points = (
        (metrics["overall"], threshold_label(metrics["threshold"], metrics["threshold_source"]), "o", "#d62728"),
        (paper["overall"], threshold_label(paper["threshold"], PAPER_PROTOCOL), "s", "#6a3d9a"),
    )
    for group, label, marker, colour in points:
        sens, spec = group["metrics"]["sens"]["value"], group["metrics"]["spec"]["value"]
        if sens is None or spec is None:
            ax.text(0.5, 0.5, "ROC undefined: one class only", ha="center", va="center")
            break
        ax.plot(
            [1 - spec],
            [sens],
            marker=marker,
            markersize=9,
            color=colour,
            markeredgecolor="black",
            zorder=5,
            clip_on=False,
            label=f"threshold {label}: sens {sens:.0%}, spec {spec:.0%}",
        )
    ax.set(
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
        aspect="equal",
        xlabel="false positive rate (1 - specificity)",
        ylabel="true positive rate (sensitivity)",
        title=f"ROC, {metrics['evaluated']['split']} split",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7.5, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_reliability(path: Path, calibration: dict) -> None:
    """Fraction malignant vs mean probability per bin (uncalibrated, and calibrated when the checkpoint
    has a temperature) with the diagonal; below, the images per bin."""
    import matplotlib.pyplot as plt

    fig, (ax, counts) = plt.subplots(
        2, 1, figsize=(5.5, 6.5), dpi=120, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1, label="perfectly calibrated")
    views = [("uncalibrated", "#6a3d9a", "s")]
    if calibration["calibrated"]:
        views.append(("calibrated", "#d62728", "o"))
    width = 1.0 / calibration["bins"]
    for offset, (name, colour, marker) in enumerate(views):
        bins = [b for b in calibration[name]["reliability"] if b["n"]]
        ece = calibration[name]["ece"]["value"]
        label = f"{name}" + (f", T = {calibration['temperature']:.3g}" if name == "calibrated" else "")
        label += f": ECE {ece:.1%}" if ece is not None else ""
        ax.plot(
            [b["mean_probability"] for b in bins],
            [b["fraction_malignant"] for b in bins],
            marker=marker,
            color=colour,
            label=label,
        )
        share = width / len(views)
        counts.bar(
            [b["low"] + share * (offset + 0.5) for b in calibration[name]["reliability"]],
            [b["n"] for b in calibration[name]["reliability"]],
            width=share,
            color=colour,
            alpha=0.7,
            label=name,
        )
    ax.set(
        xlim=(0, 1),
        ylim=(-0.02, 1.02),
        ylabel="fraction malignant",
        title=f"Reliability, {calibration['bins']} equal-width bins",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    counts.set(xlabel="mean malignant probability in the bin", ylabel="images")
    counts.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_confusion(path: Path, confusion: dict, threshold: float) -> None:
    """2x2 confusion matrix: count and percent of the true class in each cell."""
    import matplotlib.pyplot as plt

    counts = np.array([[confusion["tn"], confusion["fp"]], [confusion["fn"], confusion["tp"]]])
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=120)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    names = [["TN", "FP"], ["FN", "TP"]]
    for row in range(2):
        for col in range(2):
            colour = "white" if share[row, col] > 0.55 else "black"
            ax.text(
                col,
                row,
                f"{names[row][col]}\n{counts[row, col]}\n{share[row, col]:.1%}",
                ha="center",
                va="center",
                color=colour,
                fontsize=12,
            )
    ax.set_xticks([0, 1], ["benign", "malignant"])
    ax.set_yticks([0, 1], [f"benign\n(n={totals[0, 0]})", f"malignant\n(n={totals[1, 0]})"])
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set(
        xlabel="predicted",
        ylabel="true",
        title=f"Confusion matrix, threshold {threshold:.2f}\naccuracy {accuracy:.1%} of {counts.sum()} images",
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_overlays(path: Path, overlays: OverlayPool) -> None:
    """Best cases on the top row, worst on the bottom: image, ground truth and predicted contours."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows = [("best Dice", overlays.best), ("worst Dice", overlays.worst)]
    width = max(len(overlays.best), len(overlays.worst))
    fig, axes = plt.subplots(2, width, figsize=(2.8 * width + 0.4, 7.0), dpi=120, squeeze=False, layout="constrained")
    for row, (title, cases) in enumerate(rows):
        for col in range(width):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(cases):
                _draw_case(ax, cases[col])
        axes[row, 0].text(
            -0.06,
            0.5,
            title,
            transform=axes[row, 0].transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize=12,
            fontweight="bold",
        )
    handles = [
        Line2D([], [], color=GROUND_TRUTH_COLOUR, linewidth=2, label="ground truth"),
        Line2D([], [], color=PREDICTION_COLOUR, linewidth=2, linestyle="--", label="prediction"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
    fig.savefig(path)
    plt.close(fig)


def _draw_case(ax, case: OverlayCase) -> None:
    """Image, predicted region (translucent fill + dashed outline), ground truth (solid outline)."""
    from matplotlib.colors import ListedColormap

    ax.imshow(case.image, cmap="gray", vmin=0, vmax=255, interpolation="bilinear")
    ax.imshow(
        np.ma.masked_equal(case.predicted, 0),
        cmap=ListedColormap([PREDICTION_COLOUR]),
        alpha=0.25,
        interpolation="nearest",
    )
    # Padding by one empty pixel closes the outline of a region that touches the image border.
    side = np.arange(-1, case.image.shape[0] + 1), np.arange(-1, case.image.shape[1] + 1)
    for mask, colour, style in (
        (case.predicted, PREDICTION_COLOUR, "dashed"),
        (case.truth, GROUND_TRUTH_COLOUR, "solid"),
    ):
        if mask.any():
            ax.contour(
                side[1],
                side[0],
                np.pad(mask.astype(float), 1),
                levels=[0.5],
                colors=[colour],
                linewidths=1.8,
                linestyles=style,
            )
    ax.set_xlim(-0.5, case.image.shape[1] - 0.5)
    ax.set_ylim(case.image.shape[0] - 0.5, -0.5)
    label = "malignant" if case.label else "benign"
    name = case.image_id if len(case.image_id) <= 40 else "..." + case.image_id[-37:]
    ax.set_title(f"{name}\ntrue {label}, p(malignant) {case.prob:.2f}\nDice {case.dsc:.3f}", fontsize=8.5)
