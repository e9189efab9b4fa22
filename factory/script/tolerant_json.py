"""Tolerant JSON reading of an LLM response: prose, code fences, token-limit cuts and the usual
syntax slips repaired (each counted), anything else rejected as `invalid_json`."""

from __future__ import annotations

import json
import re
from typing import Any

import json_repair

from factory.script.outcomes import ParseReport, ScriptRejected

__all__ = ["load_json"]


def _strip_wrapping(raw: str) -> str:
    """Drops code fences and prose around the outermost JSON object or array."""
    fence = re.search(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", raw, flags=re.DOTALL)
    if fence and ("{" in fence.group(1) or "[" in fence.group(1)):
        raw = fence.group(1)
    starts = [i for i in (raw.find("{"), raw.find("[")) if i >= 0]
    if not starts:
        return raw.strip()
    start = min(starts)
    end = max(raw.rfind("}"), raw.rfind("]"))
    return raw[start : end + 1] if end > start else raw[start:]


def _close_truncated(text: str) -> str | None:
    """A response cut by the token limit: everything up to the last complete element of the
    top-level container's list, with the open brackets closed. None when nothing is left open
    (not truncated), "" when the cut came before any complete element.

    Kept by hand rather than left to json_repair, which closes the open string and brackets
    where the cut fell: a turn cut mid-sentence would then be accepted as if it were whole."""
    stack: list[str] = []
    last: tuple[int, list[str]] | None = None
    in_string = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append(ch)
        elif ch in "}]":
            if not stack:
                return None  # more closed than opened: not a cut, json_repair's case
            stack.pop()
            if stack in (["{", "["], ["["]):
                last = (i, list(stack))
        i += 1
    if not stack:
        return None
    if last is None:
        return ""
    pos, open_ = last
    return text[: pos + 1] + "".join("]" if b == "[" else "}" for b in reversed(open_))


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _FAIL


_FAIL = object()


def load_json(raw: str, report: ParseReport) -> Any:
    """`json.loads` first; then, each counted in `report.repairs`: prose and code fences
    stripped, a token-limit cut closed after its last complete element, and `json_repair` for
    the rest (single quotes, trailing or missing commas, stray characters, unquoted keys)."""
    value = _loads(raw)
    if value is not _FAIL:
        return value
    text = _strip_wrapping(raw)
    if text != raw.strip():
        report.repairs["stripped_wrapping"] += 1
        value = _loads(text)
        if value is not _FAIL:
            return value
    closed = _close_truncated(text)
    if closed == "":
        raise ScriptRejected("invalid_json", f"cut off before the first complete turn: {raw[:80]!r}")
    if closed is not None:
        report.repairs["truncated"] += 1
        text = closed
        value = _loads(text)
        if value is not _FAIL:
            return value
    try:
        value = json_repair.loads(text, skip_json_loads=True)
    except (ValueError, TypeError, IndexError, RecursionError):
        value = None
    # json_repair reads any text as *something* (prose becomes ""); only a container can be a script.
    if not isinstance(value, dict | list) or not value:
        raise ScriptRejected("invalid_json", f"unreadable after repairs: {raw[:80]!r}")
    report.repairs["json_repaired"] += 1
    return value
