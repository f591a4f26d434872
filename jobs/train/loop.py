"""The loop each Ray Train worker runs: paper 3.3 training on its data shard, validation, checkpoints.

The splits come decoded once per run from blocks in the object store, or streamed from Parquet
when they do not fit there (`jobs.data.cache`). Every epoch:
`jobs.train.step.train_step` on each batch of the worker's share of a new seeded order of the
training split (augment on the worker's device, forward under bf16 autocast on GPU, the multitask
loss, a DDP step with Adam). Then rank 0 validates on the whole val split (not sharded, so the
numbers are those of the model on that split, not of a lucky shard), chooses the decision threshold
there, fits the temperature that calibrates the probability there (`models.calibration`; each epoch's
checkpoint carries its own, so the published best carries the one fitted for its weights, without a
pass more), and writes a checkpoint in our format plus the optimizer state (pickle-free) into a temp dir.

On a GPU the model runs channels-last (the layout cuDNN's bf16 convolutions want; on 2 CPU cores
it saved 8-13% of a tiny step, but its other float rounding moved the demo's seed-0 test ROC-AUC from
0.972 to 0.926, so CPU training keeps the default layout until that is measured over seeds), Adam is fused
(`jobs.train.recipe.build_optimizer`), DDP's gradients are views into its all-reduce buckets (no
copy per step; `DDP_OPTIONS`) and `--compile` hands the DDP model to `torch.compile`.
Every rank calls `ray.train.report` (a barrier); only rank 0 hands over a checkpoint.

Resume (same run folder, or a worker group restarted after a failure) starts from the epoch after
the last reported checkpoint: a failure costs at most the epoch in progress (and the one before it
when the worker dies within the 2 s in which Ray Train's controller collects a report).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time

import numpy as np
import torch

from jobs import progress
from jobs.data import cache
from jobs.train.config import LoopConfig
from jobs.train.recipe import build_ema, build_optimizer, learning_rate, selection_score, set_learning_rate, should_stop
from jobs.train.state import load_train_state, load_trained_weights, save_train_state, save_trained_weights
from jobs.train.step import train_step

# Gradients as views into the all-reduce buckets: one gradient copy less per step, and less memory.
DDP_OPTIONS = {"gradient_as_bucket_view": True}


def train_loop_per_worker(config: LoopConfig) -> None:
    """Ray Train entry point; `config` is `jobs.train.driver.loop_config(...)`, bound by the driver."""
    import ray.train
    import ray.train.torch

    from models import build_model, load_checkpoint
    from models.preprocess import Preprocessing

    if not config.train.verbose:
        _quiet_train_reports()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    use_bf16 = device.type == "cuda"
    run = config.train
    torch.manual_seed(run.seed * 1000 + rank)

    model = build_model(run.preset, run.variant, **config.overrides, backbone=run.backbone, pretrained=run.pretrained)
    loaded = {name: weights.sha256 for name, weights in model.pretrained_weights.items()}
    if loaded != {name: record["sha256"] for name, record in config.lineage.get("pretrained", {}).items()}:
        raise ValueError(f"this worker's pretrained weights {loaded} are not those the driver checked")
    state = {"epoch": 0, "epochs_run": [], "starts": [], "scores": []}
    checkpoint = ray.train.get_checkpoint()
    with tempfile.TemporaryDirectory(prefix="busnet-resume-") as resume_dir:
        if checkpoint is not None:
            checkpoint.to_directory(resume_dir)
            restored, _ = load_checkpoint(resume_dir)
            model.load_state_dict(restored.state_dict())
        ema = build_ema(model, run.ema)  # from the checkpoint's model: the average when the run kept one
        if checkpoint is not None and ema is not None:
            load_trained_weights(resume_dir, model)  # the weights being trained, saved beside their average
        model, plain_model = place_model(model, device)
        optimizer = build_optimizer(model, run)
        if checkpoint is not None:  # the optimizer state goes onto the parameters' device, so after prepare_model
            state = {"scores": [], **load_train_state(resume_dir, optimizer)}
    if ema is not None:
        ema.to(device)
    first_epoch = state["epoch"] + 1
    state["starts"] = [*state["starts"], first_epoch]
    if run.compile:
        model = torch.compile(model)  # checkpoints, EMA and validation keep using plain_model
    preprocessing = Preprocessing.from_dict(config.preprocessing)

    from jobs.data.augment import Augmenter

    augmenter = Augmenter(device)
    for epoch in range(first_epoch, run.epochs + 1):
        epoch_batches = training_batches(config, epoch, rank, world, device)
        # rank 0's steps stand for every worker's (each runs steps_per_epoch): one bar per run, on a terminal
        name = f"{config.lineage['run_name']} epoch {epoch}/{run.epochs}"
        bar = progress.bar(config.steps_per_epoch, name, "batch") if rank == 0 else None
        train_loss, images_per_s, data_wait = _train_one_epoch(
            model, plain_model, optimizer, ema, augmenter, epoch_batches, config, epoch, world, bar
        )
        metrics = {"epoch": epoch, "train_loss": train_loss, "images_per_s": images_per_s, "data_wait": data_wait}
        state = {**state, "epoch": epoch, "epochs_run": [*state["epochs_run"], epoch]}
        stop = torch.zeros(1, device=device)  # NCCL broadcasts only device tensors
        if rank == 0:
            scored = plain_model if ema is None else ema.module
            validation, threshold = validate(scored, split_batches(config, "val", device), config, device, use_bf16)
            raw, smoothed = selection_score(validation, state["scores"], run.smooth)
            state["scores"] = [*state["scores"], raw]
            metrics.update(validation, val_score_epoch=raw, val_score=smoothed, threshold=threshold)
            stop[0] = float(should_stop(_smoothed_history(state["scores"], run.smooth), run.patience))
            _print_progress(metrics, run.epochs, stopping=bool(stop[0]))
            with tempfile.TemporaryDirectory(prefix="busnet-ckpt-") as directory:
                _write_checkpoint(scored, optimizer, directory, preprocessing, threshold, metrics, state, config)
                if ema is not None:
                    save_trained_weights(directory, plain_model)
                ray.train.report(
                    metrics,
                    checkpoint=ray.train.Checkpoint.from_directory(directory),
                    checkpoint_dir_name=f"epoch-{epoch:04d}",
                )
        else:
            ray.train.report(metrics)
        if world > 1:
            import torch.distributed as dist

            dist.broadcast(stop, src=0)
        if stop[0]:
            break


def _quiet_train_reports() -> None:
    """Ray 2.60 logs each `ray.train.report` (the whole metrics dict) at INFO from a logger named after
    its file (`getLogger(__file__)`, not "ray.train..."), so `RunConfig(logging_config=...)`, which
    filters the "ray.train" loggers, lets it through to the console once per epoch."""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def place_model(model: torch.nn.Module, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the model to train: on the worker's device, channels-last on CUDA, DDP-wrapped with `DDP_OPTIONS`
    when the group has several workers; the plain module, for checkpoints, EMA and validation)."""
    import ray.train.torch

    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs=DDP_OPTIONS)
    return model, (model.module if hasattr(model, "module") else model)


def _smoothed_history(scores: list[float], smooth: int) -> list[float]:
    """The smoothed val_score of every epoch so far (what early stopping watches)."""
    return [selection_score({"val_auc": s}, scores[:i], smooth)[1] for i, s in enumerate(scores)]


def training_batches(config: LoopConfig, epoch: int, rank: int, world: int, device: torch.device):
    """This rank's `steps_per_epoch` batches of one epoch: its share of the epoch's seeded order."""
    split, run = config.splits["train"], config.train
    if isinstance(split, cache.StreamedSplit):
        import ray.train

        shard = ray.train.get_dataset_shard("train")
        return cache.streamed_batches(
            shard,
            split,
            seed=run.seed,
            epoch=epoch,
            batch_size=run.batch_size,
            steps=config.steps_per_epoch,
            device=device,
        )
    return cache.training_batches(
        split,
        seed=run.seed,
        epoch=epoch,
        rank=rank,
        world=world,
        batch_size=run.batch_size,
        steps=config.steps_per_epoch,
        device=device,
    )


def split_batches(config: LoopConfig, name: str, device: torch.device):
    """Every row of split `name` once (validation): from its cached blocks, or streamed."""
    split = config.splits[name]
    if isinstance(split, cache.StreamedSplit):
        import ray.train

        shard = ray.train.get_dataset_shard(name)
        return cache.streamed_batches(
            shard, split, seed=0, epoch=0, batch_size=config.train.batch_size, steps=None, device=device
        )
    return cache.all_batches(split, batch_size=config.train.batch_size, device=device)


def _train_one_epoch(
    model, plain_model, optimizer, ema, augmenter, epoch_batches, config: LoopConfig, epoch: int, world: int, bar=None
) -> tuple[float, float, float]:
    """One pass over this worker's batches; returns (mean loss, images/s, share of the time spent
    waiting for the next batch) over all workers. The learning rate follows the schedule step by step;
    `bar` (jobs.progress.bar), when given, counts the steps and is closed at the end."""
    run = config.train
    total_steps = run.epochs * config.steps_per_epoch
    step = (epoch - 1) * config.steps_per_epoch
    model.train()
    losses, images, waited, started = [], 0, 0.0, time.perf_counter()
    asked = time.perf_counter()
    for batch in epoch_batches:
        waited += time.perf_counter() - asked
        set_learning_rate(optimizer, learning_rate(step, total_steps, run, config.steps_per_epoch))
        loss = train_step(model, optimizer, augmenter, batch, run.loss, run.clip_grad, run.dice == "image")
        if ema is not None:
            ema.update_parameters(plain_model)
        losses.append(loss * len(batch["label"]))  # summed at the end: no GPU sync per step
        images += len(batch["label"])
        step += 1
        if bar is not None:
            bar.update(1)
        asked = time.perf_counter()
    if bar is not None:
        bar.close()
    loss_sum = float(torch.stack(losses).sum()) if losses else 0.0
    elapsed = time.perf_counter() - started
    device = next(plain_model.parameters()).device  # NCCL reduces only device tensors
    totals = torch.tensor([loss_sum, float(images), waited], dtype=torch.float64, device=device)
    longest = torch.tensor([elapsed], dtype=torch.float64, device=device)
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(totals, op=dist.ReduceOp.SUM)
        dist.all_reduce(longest, op=dist.ReduceOp.MAX)
    loss_total, image_total, wait_total = totals.tolist()
    seconds = max(float(longest), 1e-9)
    return loss_total / max(image_total, 1.0), image_total / seconds, min(1.0, wait_total / world / seconds)


def validate(
    model: torch.nn.Module,
    val_batches,
    config: LoopConfig,
    device: torch.device,
    use_bf16: bool = False,
) -> tuple[dict[str, float], float]:
    """Every metric of `models.metrics` (+ val_loss, the sensitivity at `OPERATING_SPECIFICITY` and the
    calibration error) on the whole val split (`val_batches`: every row once, `split_batches`), at the
    threshold chosen there; and with `calibrate` the temperature fitted there ("temperature" and
    "val_ece_calibrated" in the metrics when one could be fitted), the threshold then moved onto the
    calibrated probability. Returns (metrics, threshold on the probability the checkpoint gives).

    The forward pass is `models.inference.predict`, the step evaluation and serving use; the loss
    comes from the same pass's logits."""
    from models.calibration import calibrate_threshold, calibrated, expected_calibration_error, fit_temperature
    from models.inference import binarize, predict
    from models.losses import multitask_loss
    from models.metrics import (
        choose_threshold,
        classification_metrics,
        segmentation_metrics,
        sensitivity_at_specificity,
    )

    dtype = torch.bfloat16 if use_bf16 else None
    probs, labels, logits = [], [], []
    loss_sum, seg_sums, seg_images = 0.0, {"dsc": 0.0, "ji": 0.0}, 0
    for batch in val_batches:
        prediction = predict(model, batch["image"], device, dtype)
        loss = multitask_loss(
            prediction.outputs,
            batch["label"],
            batch["mask"],
            config.train.loss,
            has_mask=batch["has_mask"],
            dice_per_image=config.train.dice == "image",
        ).total
        loss_sum += float(loss) * len(batch["label"])
        probs.append(prediction.probs)
        logits.append(prediction.outputs["logits"].cpu().numpy().astype(np.float64))
        labels.append(batch["label"].cpu().numpy())
        has_mask = batch["has_mask"].cpu().numpy().astype(bool)
        if prediction.mask_probs is not None and has_mask.any():
            predicted = binarize(prediction.mask_probs[has_mask])
            true = (batch["mask"] > 0.5).cpu().numpy()[has_mask, 0]
            batch_seg = segmentation_metrics(true, predicted)  # mean per image over this batch
            for key in seg_sums:
                seg_sums[key] += batch_seg[key] * int(has_mask.sum())
            seg_images += int(has_mask.sum())
    y_true, y_prob = np.concatenate(labels).astype(int), np.concatenate(probs)
    threshold = robust_threshold(y_prob, float(choose_threshold(y_true, y_prob)))
    metrics = {f"val_{k}": float(v) for k, v in classification_metrics(y_true, y_prob, threshold).items()}
    metrics["val_loss"] = loss_sum / len(y_true)
    metrics["val_sens_at_spec"] = sensitivity_at_specificity(y_true, y_prob)["sens"]
    metrics["val_ece"] = expected_calibration_error(y_true, y_prob)
    if seg_images:
        metrics.update({f"val_{k}": v / seg_images for k, v in seg_sums.items()})
    if config.train.calibrate:
        temperature, _ = fit_temperature(np.concatenate(logits), y_true)
        if temperature is not None:
            # The threshold moves with the probability: the same validation images either side of it.
            threshold = calibrate_threshold(threshold, temperature)
            y_calibrated = calibrated(np.concatenate(logits), temperature)
            metrics.update(temperature=temperature, val_ece_calibrated=expected_calibration_error(y_true, y_calibrated))
    return metrics, threshold


def robust_threshold(probs: np.ndarray, chosen: float) -> float:
    """Move Youden's threshold (which equals one image's probability) halfway down to the next lower
    probability (to 0 below the lowest): the same decisions on this split, but not on a knife edge where
    1e-7 of float noise (another batch size, another machine, the temperature's float32 sigmoid) flips
    that image. A threshold that is no image's probability (0.5 with one class) stays where it is."""
    lower = probs[probs < chosen]
    if not lower.size and not np.isin(chosen, probs):
        return chosen
    return float((chosen + (lower.max() if lower.size else 0.0)) / 2)


def _write_checkpoint(
    model, optimizer, directory: str, preprocessing, threshold: float, metrics: dict, state: dict, config: LoopConfig
) -> None:
    from models import save_checkpoint

    lineage = {**config.lineage, "epoch": metrics["epoch"]}
    save_checkpoint(
        model,
        directory,
        preprocessing=preprocessing,
        threshold=threshold,
        temperature=metrics.get("temperature"),
        metrics=metrics,
        lineage=lineage,
    )
    save_train_state(directory, optimizer, state)


def _print_progress(metrics: dict, epochs: int, stopping: bool) -> None:
    """One console line per epoch. Written to stdout directly: Ray Train turns a worker's `print`
    into a log record that reaches the console twice (from the worker's stdout and stderr files)."""
    dice = f" Dice {metrics['val_dsc']:.3f}" if "val_dsc" in metrics else ""
    line = (
        f"[busnet train] epoch {metrics['epoch']}/{epochs}  loss {metrics['train_loss']:.3f}  "
        f"val ROC-AUC {metrics['val_auc']:.3f}{dice}  score {metrics['val_score']:.3f}  "
        f"{metrics['images_per_s']:.1f} img/s  data wait {100 * metrics['data_wait']:.0f}%"
        + ("  (early stop: no better val_score)" if stopping else "")
    )
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
