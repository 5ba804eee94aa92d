"""Progress bars for long steps, drawn where a person is watching.

A notebook executed by ``semalign run`` must not carry its progress bars into
the executed copy (they would land in the book as lines of text). The runner
therefore tells its kernels, through :data:`PROGRESS_TTY_ENV`, which terminal
it runs on ("" when none): bars are drawn on that terminal and nowhere else.
Outside the runner (a notebook opened in Jupyter, a script, a benchmark) bars
are tqdm's usual ones.
"""

from __future__ import annotations

import functools
import os

#: Set by the runner for its kernels: the path of its terminal, or "" for no bars.
PROGRESS_TTY_ENV = "SEMALIGN_PROGRESS_TTY"


@functools.lru_cache(maxsize=None)
def _runner_terminal(path: str):
    try:
        return open(path, "w", buffering=1, encoding="utf-8")  # noqa: SIM115 (kept open for the kernel's life)
    except OSError:  # the runner's terminal went away: no bars
        return None


def progress_bar(iterable=None, *, disable: bool = False, **kwargs):
    """``tqdm(iterable, **kwargs)``, on the runner's terminal inside a run (or
    disabled when the run has none), tqdm.auto's bar elsewhere."""
    if PROGRESS_TTY_ENV in os.environ:
        from tqdm import tqdm

        path = os.environ[PROGRESS_TTY_ENV]
        stream = _runner_terminal(path) if path else None
        return tqdm(iterable, file=stream, disable=disable or stream is None, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=disable, **kwargs)
