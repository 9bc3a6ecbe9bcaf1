"""Writing metrics.jsonl (one JSON object per row; read with hdee.expert_dir.read_metrics),
optional TensorBoard, and progress reporting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from hdee.expert_dir import metrics_path, read_metrics
from hdee.core.fsutil import atomic_write_text


class MetricsLog:
    """Appends rows; on resume, rows after the restored step are dropped so a rerun writes the same file."""

    def __init__(self, out_dir: Path, resume_step: int | None, tensorboard: bool = False):
        self.path = metrics_path(out_dir)
        rows = [r for r in read_metrics(self.path) if resume_step is not None and r.get("step", 0) <= resume_step]
        atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        self._file = open(self.path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"))

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row, sort_keys=True) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, row["step"])

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


class ProgressBar:
    """A rich progress bar showing step, loss, tokens/s and ETA."""

    def __init__(self, total: int, start: int, label: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._progress.add_task(label, total=total, completed=start, loss="-", tps="-")
        self._progress.start()

    def __call__(self, row: dict[str, Any]) -> None:
        loss = row.get("loss")
        tps = row.get("tokens_per_s")
        self._progress.update(
            self._task,
            completed=row["step"],
            loss=f"{loss:.4f}" if loss is not None else "-",
            tps=f"{tps:,.0f}" if tps else "-",
        )

    def close(self) -> None:
        self._progress.stop()


ProgressHook = Callable[[dict[str, Any]], None]
