"""The one error an export raises: what went wrong, what to do, and the CLI's exit code."""

from __future__ import annotations


class ExportError(ValueError):
    """An export cannot be made as asked (unknown format, a bad option, a frame rate that does not
    divide the sample rate, no sample left...): the message says what and what to do. `exit_code`
    is the CLI's: 2 bad option/config, 3 missing tokenizer weights or backend, 4 nothing exported."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
