"""The seed cache: seed models trained once, outside any run directory, and imported by runs.

With `seed_models.cache = true` a seed job's `cache` names an entry
`$HDEE_CACHE/seeds/<size>-<hash>/`; the hash covers exactly what decides the seed's weights
(size, family, steps, the data and tokenizer it reads, its schedule, the trainer settings and
its draw's seed: `hdee.plan.builder`), so two runs, or two configs, that would train the same
seed share one entry, and a changed input names a new one. The entry holds the trained model
(`model/`, a finished expert dir) and the `.lock` of whoever is training it. The run then
imports the model (`hdee.train.pretrained.import_seed`), which measures its validation loss on
the run's seed domains and records the training it cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from hdee.data.cache import cache_root
from hdee.expert_dir import is_finished
from hdee.core.names import check_name


def seeds_root() -> Path:
    return cache_root() / "seeds"


def entry_dir(key: str) -> Path:
    return seeds_root() / check_name(key, "seed cache entry")


def model_dir(key: str) -> Path:
    return entry_dir(key) / "model"


def is_built(key: str) -> bool:
    return is_finished(model_dir(key))


def train_cached(key: str, job: Any, progress: Callable[[dict], None] | None = None) -> Path:
    """The finished model dir of entry `key`, trained first from `job` (a `TrainJob`) when missing.

    Training holds the entry's lock, so a second process that needs the same seed at the same
    time fails with the holder's pid instead of training it twice; an interrupted one resumes.
    """
    from hdee.core.lock import run_dir_lock
    from hdee.train import run_train_job
    from hdee.train.checkpoint import verify_expert

    out = model_dir(key)
    if not is_finished(out):
        with run_dir_lock(entry_dir(key), "seeds"):
            run_train_job(job.model_copy(update={"out_dir": out, "meta": {**job.meta, "cache": key}}), progress=progress)
    verify_expert(out)
    return out
