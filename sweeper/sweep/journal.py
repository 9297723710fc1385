"""The study's journal file (Optuna ``JournalStorage``), checked before a search creates anything.

Optuna writes one JSON record per line under a lock file (``JournalFileOpenLock``). A launch killed while it appended
leaves a last line without its newline: Optuna skips it on read, but writes the next record right after it on the
same line, and the journal is unreadable from then on. Any other line that is not a record
is damage this module does not guess about: the search is refused, naming the file.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from ..config.checks import ConfigError

log = logging.getLogger(__name__)


def check_journal(path: Path) -> None:
    """Raise ConfigError (one sentence naming the file) for a journal path under a regular file, a directory, or a
    journal with a line that is not a record; cut off a torn last record, after a backup copy, with one warning line.
    """
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ConfigError(f"the study journal {path} cannot be created: {blocker} is a regular file, not a directory; "
                          "set hydra.sweeper.storage to a path in a directory")
    if path.exists() and not path.is_file():
        raise ConfigError(f"the study journal {path} is not a regular file; set hydra.sweeper.storage to a file path")
    if not path.is_file():
        return
    from optuna.storages.journal import JournalFileOpenLock

    lock = JournalFileOpenLock(str(path))  # the lock Optuna's appends hold: a record being written is not torn
    lock.acquire()
    try:
        _cut_torn_tail(path)
    finally:
        lock.release()


def _cut_torn_tail(path: Path) -> None:
    data = path.read_bytes()
    *records, tail = data.split(b"\n")
    for number, line in enumerate(records, start=1):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or "op_code" not in record:
            raise ConfigError(f"the study journal {path} is corrupt (line {number} is not an Optuna journal record); "
                              "move it away to start the study afresh, or set hydra.sweeper.storage to another file")
    if not tail:
        return
    if not tail.startswith(b"{"):
        raise ConfigError(f"the study journal {path} is corrupt (its last line is not an Optuna journal record); "
                          "move it away to start the study afresh, or set hydra.sweeper.storage to another file")
    backup = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.copy2(path, backup)
    with open(path, "r+b") as handle:
        handle.truncate(len(data) - len(tail))
    log.warning("study journal %s: its last record was torn (a launch killed while writing it); cut off its %d "
                "bytes, %d complete records kept, backup in %s", path, len(tail), len(records), backup)
