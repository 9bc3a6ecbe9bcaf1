"""The consoles every command prints through.

On a terminal rich fits tables to the window. Off a terminal (a pipe, a file, CI logs) rich
would assume 80 columns and cut every wide table's cells to "…", so there the console is as
wide as any table needs and long lines are not wrapped: `hdee plan | cat` keeps every number.
"""

from __future__ import annotations

from rich.console import Console

#: columns off a terminal: wide enough for any table hdee prints, so none is cut
UNLIMITED = 10_000


def make_console(stderr: bool = False) -> Console:
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return probe
    return Console(stderr=stderr, width=UNLIMITED, soft_wrap=True)
