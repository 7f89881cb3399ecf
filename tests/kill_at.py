"""`python tests/kill_at.py ARGS...`: the supercorrect CLI that SIGKILLs itself at a named point, for
tests/test_kill_resume.py.

Right after the first rows are appended (and flushed) to a file whose path ends with $SC_KILL_AFTER_APPEND
(e.g. `eval-hsft/test/greedy.shard.jsonl`: the eval stage's first shard flush), the process kills its own
process group (the session the test started it in, so the grader's workers die with it) with SIGKILL. The kill
lands at that point whatever the machine's speed, where a kill aimed from outside N seconds into a stage lands
wherever the stage happens to be by then (or in the next stage). Nothing in the package changes: the hook is
this wrapper around `supercorrect.cli.main`, used only for the killed process, never for the uninterrupted runs.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable

from supercorrect import io
from supercorrect.cli import main

TARGET = os.environ["SC_KILL_AFTER_APPEND"]
_append_many = io.JsonlAppender.append_many


def append_many_then_die(self: io.JsonlAppender, rows: Iterable[dict]) -> None:
    _append_many(self, rows)
    if self.path.as_posix().endswith(TARGET):
        os.killpg(os.getpgrp(), signal.SIGKILL)


io.JsonlAppender.append_many = append_many_then_die  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())
