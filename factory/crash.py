"""Named points where a crash test can stop a run (`DUPLEX_CRASH_AT`); no effect otherwise.

`DUPLEX_CRASH_AT=<point>:<n>` makes the n-th pass through `<point>` (counted per process)
write the point to the file `DUPLEX_CRASH_FLAG` names and then block, so the test can SIGKILL
the process from outside at exactly that moment. Points: `sample` (a sample finished, its shard
not yet written), `atomic_write` (a file written under its temporary name, not yet renamed),
`shard.data`, `shard.manifest`, `shard.signatures` (after each file of a shard, before its
record), `store.put` (one object published to the destination), `shard.record` (the record
published, local copies not yet deleted), `finalize.manifest`, `finalize.config` (between the
files `finalize_run` writes).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

_hits: Counter[str] = Counter()
_lock = threading.Lock()


def crash_point(name: str) -> None:
    target = os.environ.get("DUPLEX_CRASH_AT")
    if not target:
        return
    point, _, nth = target.rpartition(":")
    if point != name:
        return
    with _lock:
        _hits[name] += 1
        hit = _hits[name] == int(nth)
    if hit:
        flag = os.environ.get("DUPLEX_CRASH_FLAG")
        if flag:
            with open(flag, "w") as f:
                f.write(f"{target} pid {os.getpid()}\n")
        while True:  # hold the half-done state until the test kills the process
            time.sleep(3600)
