"""What a command run through typer's test runner printed when it failed."""

from __future__ import annotations


def cli_error(res) -> str:
    """The one error line of a refused command (exit status 2), without its `error: ` prefix."""
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0][len("error: "):]
