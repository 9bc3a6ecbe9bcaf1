"""User-facing errors. The CLI prints `str(err)` as one line and exits non-zero."""


class HdeeError(Exception):
    """Bad input or a state the user must fix; the message says what and where."""


class ConfigError(HdeeError):
    pass


class DataError(HdeeError):
    pass


class CheckpointError(HdeeError):
    pass


class TrainingError(HdeeError):
    pass


class PlanError(HdeeError):
    pass


class ExecutionError(HdeeError):
    pass


class EnsembleError(HdeeError):
    pass


class LayoutError(HdeeError):
    """A path that would leave its run directory."""


class LockError(HdeeError):
    """Another process holds the run directory."""


class DiskFullError(HdeeError, OSError):
    """A write that failed for want of space (ENOSPC, EDQUOT); still an OSError for callers that
    catch those, one line for the CLI."""

    def __str__(self) -> str:
        return str(self.strerror) if self.strerror else super().__str__()


def one_line(exc: Exception) -> str:
    """The first problem of an error as `where: what`: a pydantic `ValidationError`'s first error
    (its location dotted, "Value error, " dropped, an unknown key called one), else the first line."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        loc = [str(p) for p in first["loc"]]
        if loc[-1:] == ["[key]"]:  # a bad mapping key: the message names it
            loc = loc[:-2]
        msg = "unknown key (typo?)" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
        return f"{'.'.join(loc)}: {msg}" if loc else msg
    return (str(exc).splitlines() or [type(exc).__name__])[0]
