"""Test-only fault injection: a Ray Train worker that dies, a process killed in the middle of a publish.

`jobs.train.driver.train(config, loop=...)` takes the function each worker runs; `crash_once` returns
one that runs the production `train_loop_per_worker` unchanged and kills a worker from outside it, by
wrapping the function that hands the loop each epoch's training batches. The production loop carries no test hooks.

`die_mid_publish` arms the current process so that its next `jobs.storage.publish_dir` uploads about
half of the files and then the process is killed (SIGKILL: no cleanup, no finally blocks), the state
a reader meets during a publish and a node leaves when it dies in one. Run it in a child process.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.train.config import LoopConfig


def crash_once(marker: Path, epoch: int = 2) -> Callable[[LoopConfig], None]:
    """The production loop, except that in a fresh run the last rank exits hard (`os._exit`) at the
    first training batch of `epoch`, leaving `marker`; the restarted workers see the marker and
    run the loop untouched."""
    marker_path = str(marker)

    def armed(rank: int, size: int) -> Callable[[], None] | None:
        if os.path.exists(marker_path) or rank != size - 1:
            return None
        return lambda: _die(epoch, marker_path)

    return _loop_with_fault(armed, epoch)


def wait_for_node_loss(markers: Path, epoch: int = 2, timeout_s: float = 300.0) -> Callable[[LoopConfig], None]:
    """The production loop, except that in a fresh run every rank stops at the first training batch
    of `epoch` (once epoch `epoch - 1`'s checkpoint is registered), writes `markers/rank-R` holding
    its Ray node id, and waits there, for the test to remove a node, until its group is torn down;
    the restarted workers run the loop untouched."""

    def armed(rank: int, size: int) -> Callable[[], None]:
        return lambda: _wait_for_node_loss(epoch, markers / f"rank-{rank}", timeout_s)

    return _loop_with_fault(armed, epoch)


def _loop_with_fault(armed: Callable[[int, int], Callable[[], None] | None], epoch: int) -> Callable:
    """The production loop, whose training batches run `armed(rank, size)` at the first batch of
    `epoch` in a fresh run (none when `armed` returns None, and none after a restart)."""

    def loop(config: LoopConfig) -> None:
        import ray.train

        import jobs.train.loop as loop_module
        from jobs.train.loop import train_loop_per_worker

        context = ray.train.get_context()
        fault = armed(context.get_world_rank(), context.get_world_size())
        if fault is None or ray.train.get_checkpoint() is not None:
            train_loop_per_worker(config)  # only a fresh run is armed
            return
        original = loop_module.training_batches

        def training_batches(config, in_epoch: int, *args, **kwargs):
            batches = original(config, in_epoch, *args, **kwargs)
            return batches if in_epoch != epoch else _faulty(batches, fault)

        loop_module.training_batches = training_batches
        try:
            train_loop_per_worker(config)
        finally:
            loop_module.training_batches = original

    return loop


def _faulty(batches: Iterator, fault: Callable[[], None]) -> Iterator:
    """`batches`, with `fault` run when the loop asks for the first one (the fault never returns)."""
    fault()
    yield from batches


def _wait_for_node_loss(epoch: int, marker: Path, timeout_s: float) -> None:
    import ray

    _wait_until_registered(f"epoch-{epoch - 1:04d}")
    marker.write_text(ray.get_runtime_context().get_node_id())
    time.sleep(timeout_s)  # the test removes a node meanwhile, and Ray Train ends this group
    raise TimeoutError(f"no node was removed within {timeout_s:g} s")


def _die(epoch: int, marker: str) -> None:
    """Exit hard, once the controller has registered the previous epoch's checkpoint: Ray Train
    collects reports by polling the workers (every 2 s), so a worker that died sooner after a report
    would also lose that epoch. The test checks the guarantee past that window."""
    _wait_until_registered(f"epoch-{epoch - 1:04d}")
    Path(marker).write_text(f"the last worker exited in epoch {epoch}\n")
    os._exit(1)


def _wait_until_registered(checkpoint_dir_name: str, timeout_s: float = 120.0) -> None:
    import ray.train

    storage = ray.train.get_context().get_storage()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with storage.storage_filesystem.open_input_stream(storage.checkpoint_manager_snapshot_path) as stream:
                if checkpoint_dir_name in stream.read().decode():
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"Ray Train registered no {checkpoint_dir_name} within {timeout_s:g} s")


def die_mid_publish() -> None:
    """Make this process's next publish copy the first half of its files, then kill the process."""
    import pyarrow.fs as pafs

    copy_files = pafs.copy_files

    def copy_half_then_die(source: str, destination: str, *, source_filesystem, destination_filesystem, **options):
        selector = pafs.FileSelector(source, recursive=True)
        files = sorted(i.path for i in source_filesystem.get_file_info(selector) if i.type == pafs.FileType.File)
        for path in files[: max(1, len(files) // 2)]:
            target = destination + path[len(source) :]
            destination_filesystem.create_dir(target.rsplit("/", 1)[0], recursive=True)
            copy_files(
                path,
                target,
                source_filesystem=source_filesystem,
                destination_filesystem=destination_filesystem,
                **options,
            )
        os.kill(os.getpid(), signal.SIGKILL)

    pafs.copy_files = copy_half_then_die
