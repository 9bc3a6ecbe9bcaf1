"""The pre-registration: the verdict's endpoint, design, tests and rule, fixed in a file beforehand.

The file is `docs/preregistration.toml` in the source tree (`HDEE_PREREGISTRATION` names another).
It is validated here; `results.json` records its sha256 when the results are made, and the report
compares that with the file it reads, so a rule changed after the numbers exist shows.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hdee.core.errors import ConfigError
from hdee.core.fsutil import sha256_file

ENV = "HDEE_PREREGISTRATION"
DEFAULT = Path(__file__).resolve().parents[3] / "docs" / "preregistration.toml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(_Strict):
    metric: Literal["mean-trained-log-ppl-difference"]
    baseline: str
    ensemble: Literal["final", "all"] = "final"
    split: Literal["test"] = "test"


class Design(_Strict):
    repeats: int = Field(ge=2)
    seed_draws: int = Field(ge=0)
    vary: Literal["domain-phase", "seed-models"]
    provisional: list[str] = []


class Analysis(_Strict):
    confidence: float = Field(gt=0, lt=1)
    margin: float = Field(gt=0)
    alpha: float = Field(gt=0, lt=0.5)
    bootstrap: Literal["documents"] = "documents"
    resamples: int = Field(default=2000, ge=100)


class Rule(_Strict):
    name: Literal["superiority-or-equivalence"]


class Preregistration(_Strict):
    version: int
    endpoint: Endpoint
    design: Design
    analysis: Analysis
    rule: Rule

    @property
    def provisional(self) -> bool:
        return bool(self.design.provisional)


def prereg_path() -> Path:
    return Path(os.environ.get(ENV) or DEFAULT)


def load_prereg(path: str | Path | None = None) -> tuple[Preregistration, str] | None:
    """(the pre-registration, its file's sha256), or None when there is no file; ConfigError, one
    line, when it is malformed."""
    path = Path(path) if path is not None else prereg_path()
    if not path.is_file():
        return None
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        return Preregistration.model_validate(raw), sha256_file(path)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot parse: {str(exc).splitlines()[0]}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        msg = "unknown key (typo?)" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(f"{path}: {where}: {msg}") from None


def prereg_record() -> dict[str, str] | None:
    """What results.json keeps of the pre-registration in force: its path and sha256."""
    loaded = load_prereg()
    return None if loaded is None else {"path": str(prereg_path()), "sha256": loaded[1]}
