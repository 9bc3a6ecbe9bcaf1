"""`curves.png`: validation loss against FLOPs of every training job, one panel per lineage.

Panels: the seed models, each lineage (its iterations one after the other: an expert's curve
starts where its parent's domain-phase FLOPs ended), pilots, and the dense model. Colour says
which strategies use a job (read from the run's plan files); an expert several strategies share
is drawn once, in the colour of that group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hdee.report.compare import strategy_order  # noqa: E402
from hdee.expert_dir import ExpertRecord, is_finished, load_record, read_metrics  # noqa: E402
from hdee.core.fsutil import read_json  # noqa: E402
from hdee.core.layout import RunLayout  # noqa: E402
from hdee.plan.seeds import VARY  # noqa: E402


def _users(layout: RunLayout) -> dict[str, list[str]]:
    """Job id -> the strategies using it, over plan.json and every later repeat's plan of either
    kind (plan-repeat<k>.json, plan-seed-models-repeat<k>.json)."""
    users: dict[str, list[str]] = {}
    for vary in VARY:
        k = 0
        while (path := layout.plan_path(k, vary)).is_file():
            try:
                plan = read_json(path)
            except (OSError, ValueError):
                plan = {}
            for job in plan.get("jobs", []) if isinstance(plan, dict) else []:
                names = users.setdefault(job["id"], [])
                names += [u for u in job.get("used_by", []) if u not in names]
            k += 1
    return {job_id: strategy_order(names) for job_id, names in users.items()}


def _records(layout: RunLayout) -> dict[str, ExpertRecord]:
    """Every finished model of the run that logged metrics, by job id (unreadable records skipped)."""
    out = {}
    for d in sorted(layout.experts_dir.glob("*")):
        if is_finished(d) and read_metrics(d):
            try:
                out[d.name] = load_record(d)
            except ValueError:
                continue
    return out


def _parent_id(record: ExpertRecord) -> str | None:
    meta = record.extra("meta")
    return meta.get("parent_id") if isinstance(meta, dict) else None


def curve_lines(layout: RunLayout) -> list[dict[str, Any]]:
    """One entry per finished training job with a validation curve: panel, label, points."""
    records = _records(layout)
    users = _users(layout)

    def offset(job_id: str) -> float:
        """Domain-phase FLOPs of the job's ancestors (a seed starts every lineage at 0)."""
        total, parent = 0.0, _parent_id(records[job_id])
        while parent in records and records[parent].kind != "seed":
            total += float(records[parent].flops or 0.0)
            parent = _parent_id(records[parent])
        return total

    lines = []
    for job_id, rec in records.items():
        pts = sorted((float(r.get("flops", 0.0)), float(r["val_loss"]))
                     for r in read_metrics(layout.expert_dir(job_id)) if r.get("val_loss") is not None)
        if len(pts) < 2:
            continue
        kind = rec.kind or job_id.split("-")[0]
        size = rec.size_name or "?"
        if kind == "seed":
            panel, label = "seed models", f"seed {size}"
        elif kind == "train" and rec.lineage:
            panel, label = f"lineage {rec.lineage}", "+".join(users.get(job_id, [])) or "(no plan)"
        elif kind == "pilot":  # one short run per domain (and size): named by what it measured
            panel, label = "pilots", f"{', '.join(rec.trained_domains) or '?'} ({size})"
        else:
            panel, label = "dense", "+".join(users.get(job_id, [])) or kind
        x0 = offset(job_id) if kind == "train" else 0.0
        lines.append({"job": job_id, "panel": panel, "label": label, "size": size,
                      "x": [x0 + x for x, _ in pts], "y": [y for _, y in pts]})
    return lines


def _panel_order(name: str) -> tuple[int, str]:
    return (0 if name == "seed models" else 2 if name in ("pilots", "dense") else 1, name)


def plot_curves(layout: RunLayout, path: Path, save: Callable[[Any, Path], None]) -> int:
    """Draw curves.png with `save(fig, path)`; returns the number of jobs drawn."""
    lines = curve_lines(layout)
    panels = sorted({ln["panel"] for ln in lines}, key=_panel_order) or ["no training job finished"]
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    labels = sorted({ln["label"] for ln in lines})
    colours = {lab: plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")(i % 20) for i, lab in enumerate(labels)}
    for ax, panel in zip(axes.flat, panels):
        seen: set[str] = set()
        for ln in [ln for ln in lines if ln["panel"] == panel]:
            label = ln["label"] if ln["label"] not in seen else None
            seen.add(ln["label"])
            ax.plot(ln["x"], ln["y"], color=colours[ln["label"]], lw=1.4, alpha=0.85, label=label)
        ax.set_title(panel)
        ax.set_xlabel("FLOPs (domain phase)" if panel.startswith("lineage") else "FLOPs of the job")
        ax.set_ylabel("validation loss (nats/token)")
        if seen:
            title = {"seed models": None, "pilots": "domain (size)"}.get(panel, "used by")
            ax.legend(fontsize=7, title=title, title_fontsize=7, ncol=2 if len(seen) > 8 else 1)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"validation loss of {len(lines)} training jobs (6 x non-embedding params x tokens)")
    fig.tight_layout()
    save(fig, path)
    return len(lines)
