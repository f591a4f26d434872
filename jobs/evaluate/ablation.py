"""`busnet ablation`: the paper's Table 3 (and Table 2 baselines) with one command and one recipe.

Every variant is cross-validated (`jobs.evaluate.cv.cross_validate`) with the same `TrainConfig`,
only `variant` and `backbone` changed, into `<out>/<label>/` (`hybrid`, `baseline-densenet121`,
...); folds already trained and tested are reused, so running the command again goes on where it
stopped. Then one table of variants x metrics (mean +- sd over the folds; one row at each fold's
validation-chosen threshold, one at the paper's 0.5: the paper protocol) beside the paper's rows:
`<out>/ablation.md`, `<out>/ablation.json` and `<out>/ablation.png` (grouped bars, sd as error bars,
the paper's value as a black tick).
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from dataclasses import dataclass

from jobs import storage, tracking
from jobs.errors import BusnetError
from jobs.evaluate.protocol import header
from jobs.evaluate.report import AUC_NOTE, COLUMNS, PAPER_COLUMNS, PAPER_PROTOCOL, PAPER_ROWS, paper_row
from jobs.train.config import CvOptions, TrainConfig
from models.presets import BASELINE, VARIANTS


@dataclass(frozen=True)
class Arm:
    """One row of the ablation: a variant, and the timm backbone when it is a baseline."""

    variant: str
    backbone: str | None = None

    @property
    def label(self) -> str:
        """The row's name and its folder under `out`: no ':' so that every store takes it."""
        return f"{BASELINE}-{self.backbone}" if self.backbone else self.variant

    @property
    def paper_row(self) -> tuple[str, tuple] | None:
        return paper_row(self.variant, self.backbone)


@dataclass(frozen=True)
class AblationOutcome:
    table_uri: str
    table: dict


def parse_arms(text: str) -> list[Arm]:
    """`hybrid,mt_estan,baseline:densenet121` -> arms, checked before anything trains."""
    import timm

    arms = []
    for part in (p.strip() for p in text.split(",")):
        variant, _, backbone = part.partition(":")
        if variant == BASELINE and timm.is_model(backbone):
            arms.append(Arm(BASELINE, backbone))
        elif variant in VARIANTS and not backbone:
            arms.append(Arm(variant))
        else:
            raise BusnetError(
                f"--variants: {part!r} is neither a variant ({', '.join(VARIANTS)}) "
                f"nor {BASELINE}:<timm model name> (e.g. {BASELINE}:densenet121)"
            )
    if len({arm.label for arm in arms}) != len(arms):
        raise BusnetError(f"--variants {text!r} names a variant twice")
    return arms


def run_ablation(
    base: TrainConfig, options: CvOptions, variants: str, say: Callable[[str], None] = print
) -> AblationOutcome:
    """Cross-validate every arm with the same recipe, then write the table, its JSON and its plot.
    Tracked as one run, each arm's cv nested in it."""
    arms = parse_arms(variants)
    params = {**dataclasses.asdict(base), "variants": variants, "folds": options.folds, "bootstrap": options.bootstrap}
    with tracking.run("ablation", params=params) as tracked:
        outcome = _run_ablation(base, options, variants, arms, say)
        tracked.log_artifacts(
            *(outcome.table_uri.removesuffix(".json") + suffix for suffix in (".json", ".md", ".png"))
        )
    return outcome


def _run_ablation(
    base: TrainConfig, options: CvOptions, variants: str, arms: list[Arm], say: Callable[[str], None]
) -> AblationOutcome:
    """Cross-validate every arm with the same recipe, then write the table, its JSON and its plot."""
    from jobs.evaluate.cv import cross_validate
    from jobs.train.driver import prepare

    runs = {arm: dataclasses.replace(base, variant=arm.variant, backbone=arm.backbone, name=arm.label) for arm in arms}
    for arm, run in runs.items():  # every arm's weights found, hashed and loaded before anything trains
        weights = prepare(run).pretrained
        said = ", ".join(f"{part} {w['name']} sha256 {w['sha256'][:12]}" for part, w in weights.items()) or "none"
        say(f"[busnet ablation] {arm.label}: weights {said}")
    rows = []
    for arm in arms:
        say(f"[busnet ablation] {arm.label}: cross-validating -> {storage.join(base.out, arm.label)}")
        outcome = cross_validate(runs[arm], options, say)
        overall = outcome.summary["groups"]["overall"]
        paper = outcome.summary["paper_protocol"]
        rows.append(
            {
                "label": arm.label,
                "variant": arm.variant,
                "backbone": arm.backbone,
                "summary": outcome.summary_uri,
                "folds": outcome.summary["folds"],
                "mean": overall["mean"],
                "sd": overall["sd"],
                "paper_protocol": {
                    "threshold": paper["threshold"],
                    "mean": paper["groups"]["overall"]["mean"],
                    "sd": paper["groups"]["overall"]["sd"],
                },
            }
        )
    table = {
        "format_version": 1,
        "metrics": [name for name, _ in COLUMNS],
        "rows": rows,
        "paper": paper_rows(arms),
        "config": {
            "train": dataclasses.asdict(base),
            "variants": variants,
            "folds": options.folds,
            "protocol": options.protocol,
        },
    }
    uri = storage.join(base.out, "ablation.json")
    storage.write_bytes(uri, json.dumps(table, indent=2).encode())
    storage.write_bytes(storage.join(base.out, "ablation.md"), (render(table) + "\n").encode())
    storage.write_bytes(storage.join(base.out, "ablation.png"), plot(table))
    return AblationOutcome(table_uri=uri, table=table)


def paper_rows(arms: list[Arm]) -> list[dict]:
    """Table 3's four rows, then the Table 2 row of each baseline run that the paper has, in its units."""
    titled = dict.fromkeys([*PAPER_ROWS.values(), *(arm.paper_row for arm in arms if arm.backbone)])
    return [
        {"title": title, "values": dict(zip(PAPER_COLUMNS, values))}
        for title, values in (row for row in titled if row is not None)
    ]


def render(table: dict) -> str:
    """Markdown: per variant, mean +- sd over the folds at the validation-chosen thresholds and at the
    paper's; then the paper's rows. Percent with F1 as a fraction."""
    names = table["metrics"]
    titles = dict(COLUMNS)
    config = table.get("config", {})
    lines = [*header(config.get("train", {}), config.get("protocol")), ""] if config else []
    lines += [f"{AUC_NOTE}.", "", "| variant | folds | threshold | " + " | ".join(titles[n] for n in names) + " |"]
    lines.append("|---|---:|---|" + "---:|" * len(names))
    for row in table["rows"]:
        paper = row["paper_protocol"]
        for threshold, group in (("validation", row), (f"{paper['threshold']:.3g} ({PAPER_PROTOCOL})", paper)):
            cells = [_ours(n, group["mean"].get(n), group["sd"].get(n)) for n in names]
            lines.append(f"| {row['label']} | {len(row['folds'])} | {threshold} | " + " | ".join(cells) + " |")
    for paper in table["paper"]:
        cells = [_paper(n, paper["values"].get(n)) for n in names]
        lines.append(f"| *{paper['title']}* | - | 0.5 | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(table: dict) -> bytes:
    """PNG bytes: per metric, one bar per variant at the paper protocol (mean, sd as error bar; the
    paper's threshold, so that its value, a black tick, compares like with like)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = [row["paper_protocol"] for row in table["rows"]]
    names = [n for n in table["metrics"] if any(group["mean"].get(n) is not None for group in ours)]
    by_title = {paper["title"]: paper["values"] for paper in table["paper"]}
    width = 0.8 / max(len(table["rows"]), 1)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.2 * len(names) * max(len(table["rows"]), 1) ** 0.5), 4.0))
    for index, (row, group) in enumerate(zip(table["rows"], ours)):
        xs = [i + (index - (len(table["rows"]) - 1) / 2) * width for i in range(len(names))]
        means = [_scaled(group["mean"].get(n)) for n in names]  # NaN draws no bar: a metric the variant lacks
        sds = [_scaled(group["sd"].get(n)) for n in names]
        axes.bar(xs, means, width, yerr=sds, capsize=2, label=row["label"])
        arm = Arm(row["variant"], row["backbone"]).paper_row
        paper = by_title.get(arm[0]) if arm else None
        if paper:
            ticks = [(x, _percent(n, paper.get(n))) for x, n in zip(xs, names) if paper.get(n) is not None]
            axes.scatter([x for x, _ in ticks], [y for _, y in ticks], marker="_", s=200, color="black", zorder=3)
    axes.set_xticks(range(len(names)), [dict(COLUMNS)[n] for n in names])
    axes.set_ylabel("percent (F1 x 100) at threshold 0.5; black tick: the paper")
    axes.set_ylim(0, 100)
    axes.legend(fontsize="small", ncols=min(len(table["rows"]), 4), loc="upper center", bbox_to_anchor=(0.5, -0.08))
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return buffer.getvalue()


def _ours(name: str, mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "n/a"
    scale, digits = (1.0, 2) if name == "f1" else (100.0, 1)
    spread = "n/a" if sd is None else f"{sd * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} +- {spread}"


def _paper(name: str, value: float | None) -> str:
    return "-" if value is None else (f"{value:.2f}" if name == "f1" else f"{value:.1f}")


def _scaled(value: float | None) -> float:
    return float("nan") if value is None else 100 * value


def _percent(name: str, paper_value: float) -> float:
    """A paper value (percent, F1 as a fraction) on the plot's percent axis."""
    return 100 * paper_value if name == "f1" else paper_value
