"""Where everything of one run lives. Paths are named by what they hold, never by time.

Every path inside a run directory is built here and nowhere else (docs/architecture.md draws
the tree). Nothing here creates anything. Names inside a run come from the config and from
plan.json; `inside` refuses any path that would leave its directory, whatever a name holds.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hdee.core.errors import LayoutError

RUNS_DIR = Path("runs")  # where a run goes when no --run-dir is given: runs/<config name>
EXPERTS = "experts"
DOMAIN_PHASE = "domain-phase"  # what plain repeats vary (hdee.plan.seeds.Vary names the other kinds)


def repeat_suffix(repeat: int, vary: str = DOMAIN_PHASE) -> str:
    """How a repeat's plan and results files are told apart: '' (repeat 0, the same whatever later
    repeats vary), '-repeat<k>' for a domain-phase repeat, '-<vary>-repeat<k>' for the others (e.g.
    '-seed-models-repeat<k>'), so repeats of one kind never overwrite those of another."""
    if repeat == 0:
        return ""
    return f"-repeat{repeat}" if vary == DOMAIN_PHASE else f"-{vary}-repeat{repeat}"


def refuse_outside_links(root: str | Path) -> None:
    """LayoutError naming the first symbolic link under `root` that leads outside it.

    Writes and temp-file clean-ups would follow such a link (`experts/X` or `results/` pointing
    elsewhere) and land outside the run; links that stay inside it are left alone.
    """
    root = Path(root)
    if not root.is_dir():
        return
    real = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root):  # links to directories are listed, never entered
        for name in (*dirnames, *filenames):
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                target = os.path.realpath(path)
                if os.path.commonpath([real, target]) != real:
                    raise LayoutError(
                        f"{path}: a symbolic link to {target}, outside the run directory; hdee writes only inside "
                        f"{root}: replace the link with what it points to, or remove it"
                    )


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @classmethod
    def of(cls, name: str, run_dir: str | Path | None = None) -> "RunLayout":
        """`run_dir` when given, else runs/<name> (the config's name)."""
        return cls(run_dir if run_dir is not None else RUNS_DIR / name)

    def inside(self, base: str, *names: str) -> Path:
        """root/base/names..., refused unless each name is one plain path component.

        So `.`, `..`, separators and absolute names are refused, and the result always lies
        strictly inside root/base; a link inside the run that points elsewhere inside it still
        works, one that points outside is refused by `refuse_outside_links` before any write.
        """
        path = self.root.joinpath(base, *names)
        plain = all(n and n not in (".", "..") and "/" not in n and os.sep not in n and "\0" not in n for n in names)
        parent = os.path.abspath(self.root / base)
        if not plain or os.path.commonpath([parent, os.path.abspath(path)]) != parent:
            shown = "/".join([str(self.root / base), *names])
            raise LayoutError(f"{shown}: refused, it is not inside {self.root / base}")
        return path

    # data (owned by hdee.data)
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def tokenizer_path(self) -> Path:
        return self.data_dir / "tokenizer.json"

    @property
    def tokenizer_inputs(self) -> Path:
        """What the tokenizer was made from (prepare reuses it when unchanged)."""
        return self.data_dir / "tokenizer.inputs.json"

    @property
    def domains_dir(self) -> Path:
        return self.data_dir / "domains"

    def domain_dir(self, domain: str) -> Path:
        return self.inside("data/domains", domain)

    # models (owned by hdee.train, named by plan job ids; their inside: hdee.expert_dir)
    @property
    def experts_dir(self) -> Path:
        return self.root / EXPERTS

    def expert_dir(self, job_id: str) -> Path:
        return self.inside(EXPERTS, job_id)

    @staticmethod
    def expert_rel(job_id: str) -> str:
        """An expert's directory relative to the run root (as plan.json records it)."""
        return f"{EXPERTS}/{job_id}"

    # evaluation (owned by hdee.ensemble / hdee.evaluation.evaluate)
    @property
    def scores_dir(self) -> Path:
        return self.root / "scores"

    def score_path(self, expert_id: str, domain: str, split: str) -> Path:
        """Per-token log-probs of one expert on one domain split (.npy, with a .json sidecar)."""
        return self.inside("scores", expert_id, f"{domain}.{split}.npy")

    @property
    def routers_dir(self) -> Path:
        return self.root / "routers"

    def router_path(self, kind: str, version: str) -> Path:
        """A routed ensemble's router (.json, with its .safetensors beside it), named by what it was built from."""
        return self.inside("routers", f"{kind}-{version}.json")

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    @property
    def results_json(self) -> Path:
        return self.results_path(0)

    def results_path(self, repeat: int, vary: str = DOMAIN_PHASE) -> Path:
        """results.json for repeat 0, results-repeat<k>.json for the domain-phase repeat k > 0,
        results-seed-models-repeat<k>.json for a repeat that retrains the seed models."""
        return self.results_dir / f"results{repeat_suffix(repeat, vary)}.json"

    def pilot_path(self, repeat: int, vary: str = DOMAIN_PHASE) -> Path:
        """The validation pilot of a repeat (`hdee run --pilot`), named like `results_path`: pilot.json,
        pilot-repeat<k>.json, pilot-seed-models-repeat<k>.json."""
        return self.results_dir / f"pilot{repeat_suffix(repeat, vary)}.json"

    def results_csv(self, repeat: int, vary: str = DOMAIN_PHASE) -> Path:
        """The same numbers as `results_path(repeat, vary)`, one row per (expert or ensemble, method, domain)."""
        return self.csv_beside(self.results_path(repeat, vary))

    @staticmethod
    def csv_beside(results_json: Path) -> Path:
        """The CSV twin of any results JSON (same folder, same stem)."""
        return results_json.with_suffix(".csv")

    def text_results_path(self, name: str) -> Path:
        """`hdee eval --data ... --name NAME`: the run's ensembles on new text."""
        return self.results_dir / f"eval-{name}.json"

    def opt_out_path(self, tag: str) -> Path:
        """`hdee eval --without ...`: the run's ensembles with some experts removed."""
        return self.results_dir / f"without-{tag}.json"

    def lm_eval_path(self, strategy: str, method: str, tasks: Sequence[str] = ()) -> Path:
        """`hdee lm-eval`: lm-eval's results for one strategy's mixture on `tasks` (a run on other
        tasks gets another file; the same tasks again are refused without --force)."""
        named = "+".join(sorted(tasks))
        if tasks and not re.fullmatch(r"[A-Za-z0-9_.+-]{1,100}", named):  # task names a file should not carry
            named = "tasks-" + hashlib.sha256("\0".join(sorted(tasks)).encode()).hexdigest()[:12]
        return self.inside("results", "-".join(["lm-eval", strategy, method, *([named] if tasks else [])]) + ".json")

    # report (owned by hdee.report.write)
    def report_files(self, vary: str = DOMAIN_PHASE) -> tuple[Path, Path]:
        """report.md and report.png over the domain-phase repeats; report-seed-models.md/.png over
        the repeats that retrain the seed models."""
        stem = "report" if vary == DOMAIN_PHASE else f"report-{vary}"
        return self.root / f"{stem}.md", self.root / f"{stem}.png"

    @property
    def report_md(self) -> Path:
        return self.report_files()[0]

    @property
    def report_png(self) -> Path:
        return self.report_files()[1]

    @property
    def curves_png(self) -> Path:
        return self.root / "curves.png"

    @property
    def inference_png(self) -> Path:
        return self.root / "inference.png"

    # bookkeeping (owned by hdee.pipeline.experiment and hdee.execute)
    @property
    def config_snapshot(self) -> Path:
        return self.root / "config.json"

    @property
    def plan_json(self) -> Path:
        return self.plan_path(0)

    def plan_path(self, repeat: int, vary: str = DOMAIN_PHASE) -> Path:
        """plan.json for repeat 0, plan-repeat<k>.json for repeat k > 0 (plan-seed-models-repeat<k>.json
        for a repeat that retrains the seed models)."""
        return self.root / f"plan{repeat_suffix(repeat, vary)}.json"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def cluster_dir(self) -> Path:
        """What a cluster backend keeps: preflight token files, submitit's job folders (`.cluster/slurm`)."""
        return self.root / ".cluster"

    def done_record(self, job_id: str) -> Path:
        """A finished job's done record: its result and the sha256 of each output."""
        return self.inside("jobs", f"{job_id}.json")
