"""llama.cpp's log lines into Python logging (logger `llama_cpp`), for the embedded LLM and the
GGUF text tokenizer alike: llama-cpp-python's own callback prints them to stderr, and its level
table predates ggml's renumbering, so warnings (`llama_context: n_ctx_seq (512) > n_ctx_train (0)`)
print even with `verbose=False`. Where the logger writes is the command line's choice
(`factory.cli.logs`: a log file unless --verbose). Imports nothing of the factory."""

from __future__ import annotations

import ctypes
import logging
from typing import Any

logger = logging.getLogger("llama_cpp")
# ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues the previous line)
_LEVELS = {0: logging.INFO, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_callback: Any = None  # the ctypes callback must outlive every call from C
_pending: list[str] = []  # llama.cpp writes a line in pieces; one record per line
_level = [logging.INFO]


def route(llama_cpp: Any) -> None:
    """Install the callback on the loaded `llama_cpp` module (idempotent); call before building a model."""
    global _callback
    if _callback is not None:
        return

    @llama_cpp.llama_log_callback
    def forward(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level != 5:
            _level[0] = _LEVELS.get(level, logging.INFO)
        _pending.append(text.decode("utf-8", errors="replace"))
        if _pending[-1].endswith("\n"):
            logger.log(_level[0], "%s", "".join(_pending).rstrip("\n"))
            _pending.clear()

    _callback = forward
    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))
