"""Where the libraries' own logs go, for every command (the app's callback calls `setup` once):
unless --verbose, into a log file, not the user's console. The console keeps what the commands
print (stdout), click's usage errors and Python tracebacks (`sys.stderr`).

- C libraries that print to the process's stderr (onnxruntime, ctranslate2, espeak-ng, torch):
  file descriptor 2 becomes the log file, and `sys.stderr` a copy of the terminal's descriptor.
  Child processes inherit descriptor 2, so their C logs land in the file too.
- Python logging (llama.cpp through `factory.llama_log`, httpx, lhotse, datasets...): the root
  logger writes to the file, and Python warnings with it.
- Prefect configures its own handlers when imported: its settings (environment, read at import)
  point its console handlers at descriptor 2, the file.
- Progress bars of Hugging Face datasets / hub and tqdm: off.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from pathlib import Path
from typing import TextIO

from factory.locations import user_cache

LOG_FILE_ENV = "DUPLEX_LOG_FILE"
_verbose = True  # as if never set up (library use): nothing redirected
_terminal: TextIO | None = None


def log_file() -> Path:
    """$DUPLEX_LOG_FILE, else duplex-factory.log in the per-user cache (`factory.locations`)."""
    default = user_cache("logs") / "duplex-factory.log"
    return Path(os.environ.get(LOG_FILE_ENV) or default)


def setup(verbose: bool) -> None:
    """Send the libraries' logs to `log_file()` (appending), or with `verbose` leave them on the
    console at INFO. Once per process; nothing under click's test runner, whose streams are not
    the process's descriptors."""
    global _verbose, _terminal
    _verbose = verbose
    try:
        if sys.stderr.fileno() != 2:
            return
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return
    path = log_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    terminal = os.fdopen(os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    with open(path, "a", encoding="utf-8") as f:
        os.dup2(f.fileno(), 2)  # sys.__stderr__ (descriptor 2) now writes to the file
    sys.stderr = _terminal = terminal
    handler = logging.StreamHandler(sys.__stderr__)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.captureWarnings(True)
    for handler_name in ("CONSOLE", "DEBUG"):  # Prefect's stream handlers (prefect/logging/logging.yml)
        os.environ.setdefault(f"PREFECT_LOGGING_HANDLERS_{handler_name}_STREAM", "ext://sys.__stderr__")
    for progress in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
        os.environ.setdefault(progress, "1")


def verbose() -> bool:
    return _verbose


def terminal_stderr() -> TextIO | None:
    """The user's stderr, for a child process whose own output belongs on the console (None:
    nothing was redirected, inherit descriptor 2)."""
    return _terminal
