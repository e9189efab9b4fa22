"""espeak-ng backend through the C API of Debian's libespeak-ng.so.1 (ctypes).

Formant synthesis: robotic but instant and with 100+ voices/variants, useful as a cheap,
very different-sounding speaker. Word times come from espeak's own events: WORD events give
where each word starts (text position -> token, sample -> time) and PHONEME events for pauses
give where the speech of a word stops.

Determinism: espeak keeps synthesis state across calls (waveform phase, pitch-flutter index,
pauses after the first utterance) and draws breath noise from libc rand(), so one process
gives different bytes for the same text depending on what it said before; re-initialising
it in-process hangs (1.51). So each synthesis runs in a fresh process forked from a small,
single-threaded helper ("zygote") that never synthesises itself: same text + voice -> same
bytes whatever ran before, and espeak's global state is never shared between calls.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import struct
import subprocess
import sys
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from factory.languages import base
from factory.models import Utterance, Voice
from factory.render.base import BackendOptions, BackendUnavailable, TTSError, render_identity
from factory.render.text import build_utterance, check_params, check_text, split_punct

LIBRARY = "libespeak-ng.so.1"
PARAMS = {"pitch", "range", "wordgap"}  # espeak 0-100 scales; rate comes from `rate`
BASE_WPM = 175  # espeak's default speaking rate

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_PHONEME = 0, 1, 7
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7
_EE_OK = 0

# Tokens that espeak's English rules read badly (letter by letter: "mm" -> "em em", "hm" ->
# "aitch em"), respelled as one word it says naturally ("umhum" -> ʌmhəm, "hmmm" -> həm), so
# WORD events still map one token to one word. "uh-huh", "um", "uh", "er" come out fine as is.
RESPELL: dict[str, str] = {
    **dict.fromkeys(("mm-hmm", "mm-hm", "mmhmm", "mmhm", "mhm", "m-hm", "mhmm", "uh-hum"), "umhum"),
    **dict.fromkeys(("hmm", "hm", "hmmm", "hmmmm"), "hmmm"),
    **dict.fromkeys(("mm", "mmm", "mmmm"), "um"),
    **dict.fromkeys(("uhh", "uhhh"), "uh"),
    "uhhuh": "uh-huh",
    "mmkay": "umkay",
}


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


class _Voice(ctypes.Structure):  # espeak_VOICE
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, NUL-terminated name) pairs, ended by a 0 priority
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


def _voice_languages(address: int | None) -> list[str]:
    out: list[str] = []
    while address and ctypes.c_ubyte.from_address(address).value:
        name = ctypes.string_at(address + 1)
        out.append(name.decode())
        address += 2 + len(name)
    return out


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


def load_library(library: str = LIBRARY) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(library)
    except OSError as exc:
        raise BackendUnavailable(
            f"espeak backend: cannot load {library} ({exc}); "
            "install it with: apt-get install libespeak-ng1 espeak-ng-data"
        ) from exc


@lru_cache(maxsize=8)
def espeak_version(library: str = LIBRARY) -> str:
    """The library's own version string (espeak_Info), part of the cache identity."""
    lib = load_library(library)
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    return (lib.espeak_Info(None) or b"?").decode(errors="replace")


class _Engine:
    """The initialised library plus the state its callback fills during one espeak_Synth."""

    def __init__(self, library: str) -> None:
        self.lib = lib = load_library(library)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_PHONEME_EVENTS)
        if self.sample_rate <= 0:
            raise BackendUnavailable(
                "espeak backend: espeak_Initialize failed (voice data missing?); "
                "install it with: apt-get install libespeak-ng1 espeak-ng-data"
            )
        self.chunks: list[np.ndarray] = []
        self.words: list[tuple[int, int]] = []  # (character offset in the text, start sample)
        self.pauses: list[int] = []  # start sample of each pause phoneme
        self._callback = _CALLBACK(self._on_audio)  # keep a reference: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav, n: int, events) -> int:
        if n > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_WORD:  # text_position is a 1-based character index
                self.words.append((ev.text_position - 1, ev.sample))
            elif ev.type == _EVENT_PHONEME and ev.id.startswith(b"_"):  # "_", "_:", "_!"...
                self.pauses.append(ev.sample)
            i += 1
        return 0

    def synth(
        self, text: str, voice: str, params: dict[int, int]
    ) -> tuple[np.ndarray, list[tuple[int, int]], list[int]]:
        lib = self.lib
        if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise TTSError(f"espeak: unknown voice {voice!r} (see `espeak-ng --voices`; variants as 'en-us+f3')")
        for key, value in params.items():
            lib.espeak_SetParameter(key, value, 0)
        buf = ctypes.create_string_buffer(text.encode())
        if lib.espeak_Synth(buf, len(buf), 0, 1, 0, _CHARS_UTF8, None, None) != _EE_OK:
            raise TTSError("espeak: espeak_Synth failed")
        lib.espeak_Synchronize()
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        return audio, self.words, self.pauses

    def languages(self, voice: str) -> tuple[str, ...] | None:
        """The languages of the voice file that `espeak_SetVoiceByName(voice)` selects, as espeak's
        voices list (espeak_ListVoices) declares them; None when espeak has no such voice."""
        lib = self.lib
        if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            return None
        lib.espeak_GetCurrentVoice.restype = ctypes.POINTER(_Voice)
        chosen = (lib.espeak_GetCurrentVoice().contents.identifier or b"").decode().split("+")[0]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        voices = lib.espeak_ListVoices(None)
        i = 0
        while voices[i]:
            entry = voices[i].contents
            if (entry.identifier or b"").decode() == chosen:
                return tuple(_voice_languages(entry.languages))
            i += 1
        return None


# --------------------------------------------------------------------------- zygote
def _serve(library: str) -> None:
    """Zygote loop: per length-prefixed pickled request on stdin, fork a child that
    initialises espeak, seeds rand() and synthesises; forward its pickled result (or error)."""
    load_library(library)  # children inherit the mapped library
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while header := inp.read(4):
        request = inp.read(struct.unpack("<I", header)[0])
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                ctypes.CDLL(None).srand(0)
                engine = _Engine(library)
                op, args = pickle.loads(request)
                if op == "languages":
                    result = ("ok", engine.languages(*args))
                else:
                    result = ("ok", (*engine.synth(*args), engine.sample_rate))
            except Exception as exc:  # noqa: BLE001 - sent back and re-raised in the caller
                result = ("error", exc)
            with os.fdopen(w, "wb") as f:
                f.write(pickle.dumps(result))
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        if not data:
            data = pickle.dumps(("error", TTSError(f"espeak: synthesis process died (status {status})")))
        out.write(struct.pack("<I", len(data)) + data)
        out.flush()


class _Zygote:
    def __init__(self, library: str) -> None:
        root = str(Path(__file__).resolve().parents[2])  # so the helper imports this package
        paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        code = "import sys; from factory.render.espeak_backend import _serve; _serve(sys.argv[1])"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, library],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self.lock = threading.Lock()

    def call(self, op: str, *args: object) -> Any:
        """Run `op` ("synth" or "languages") of a fresh `_Engine` in a forked child with `args`."""
        data = pickle.dumps((op, args))
        with self.lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            try:
                self.proc.stdin.write(struct.pack("<I", len(data)) + data)
                self.proc.stdin.flush()
                header = self.proc.stdout.read(4)
                reply = self.proc.stdout.read(struct.unpack("<I", header)[0]) if len(header) == 4 else b""
            except (BrokenPipeError, OSError):
                reply = b""
        if not reply:
            raise TTSError(f"espeak: helper process exited (code {self.proc.poll()})")
        kind, value = pickle.loads(reply)
        if kind == "error":
            raise value
        return value


_zygotes: dict[str, _Zygote] = {}
_zygotes_lock = threading.Lock()


def _zygote(library: str) -> _Zygote:
    with _zygotes_lock:
        z = _zygotes.get(library)
        if z is None or z.proc.poll() is not None:
            z = _zygotes[library] = _Zygote(library)
        return z


@lru_cache(maxsize=256)
def espeak_languages(library: str, voice: str) -> tuple[str, ...] | None:
    """The language codes espeak declares for the voice file `voice` selects (None: no such voice),
    asked of a fresh engine in the zygote's child, as a render is."""
    load_library(library)  # fail here, with the install hint, not in the helper
    return _zygote(library).call("languages", voice)


class EspeakBackend:
    """Voice fields: `speaker` = espeak voice file name with optional variant ("en-us+f3";
    "en+m3", where "en" is British English; default "en-us"); params: pitch (0-100, default
    50), range (0-100, default 50), wordgap (extra pause between words, units of 10 ms).
    `rate` scales espeak's 175 words per minute. `library` is the path or soname to load."""

    name = "espeak"

    class Options(BackendOptions):
        library: str = LIBRARY  # path or soname of libespeak-ng

    def __init__(self, options: Options | None = None, *, library: str | None = None) -> None:
        self.options = options or self.Options(**({"library": library} if library else {}))
        self.library = self.options.library

    def cache_identity(self) -> str:
        return render_identity(__name__, (), f"espeak-ng={espeak_version(self.library)}")

    @classmethod
    def languages(cls, voice: Voice, options: Options) -> frozenset[str]:
        """The languages `voice` speaks: those espeak's voices list declares for the voice file its
        `speaker` selects ("hi+m2" -> Hindi's file -> hi). Raises `TTSError` for a speaker espeak
        does not have, `BackendUnavailable` without the library."""
        name = voice.speaker or "en-us"
        found = espeak_languages(options.library, name)
        if found is None:
            raise TTSError(f"espeak: unknown voice {name!r} (see `espeak-ng --voices`; variants as 'en-us+f3')")
        return frozenset(base(code) for code in found)

    def synthesize(self, text: str, voice: Voice, *, rate: float = 1.0) -> Utterance:
        tokens = check_text(text)
        check_params(voice.params, PARAMS, self.name)
        if not 0.4 <= rate <= 2.5:
            raise TTSError(f"espeak: rate {rate} outside [0.4, 2.5]")
        try:
            params = {_RATE: round(BASE_WPM * rate), _VOLUME: 100}
            for name, key in (("pitch", _PITCH), ("range", _RANGE), ("wordgap", _WORDGAP)):
                if name in voice.params:
                    params[key] = int(voice.params[name])
        except ValueError as exc:
            raise TTSError(f"espeak: voice params must be integers: {voice.params}") from exc
        spoken, starts = _respell(tokens)
        load_library(self.library)  # fail here, with the install hint, not in the helper
        pcm, events, pauses, sample_rate = _zygote(self.library).call("synth", spoken, voice.speaker or "en-us", params)
        audio = pcm.astype(np.float32) / 32768.0
        spans = _word_spans(tokens, starts, events, pauses, len(audio), sample_rate)
        return build_utterance(text, voice.id, audio, sample_rate, tokens, spans)


def _respell(tokens: list[str]) -> tuple[str, list[int]]:
    """Text as espeak will read it, and the character offset where each token starts."""
    parts, starts, pos = [], [], 0
    for token in tokens:
        lead, core, trail = split_punct(token)
        word = lead + RESPELL.get(core.lower(), core) + trail
        starts.append(pos)
        parts.append(word)
        pos += len(word) + 1
    return " ".join(parts), starts


def _word_spans(
    tokens: list[str],
    starts: list[int],
    events: list[tuple[int, int]],
    pauses: list[int],
    n_samples: int,
    sample_rate: int,
) -> list[tuple[float, float] | None]:
    """Token spans from events. espeak fires one WORD event per word it says: several for one
    token ("1995", "3-2") and none for a word it joins to the one before ("of the",
    "well-known"), so a token without an event shares its predecessor's span (split by
    letters). A word's speech runs from its event to the first pause phoneme or next word."""
    if not events:
        raise TTSError("espeak: no words were spoken")
    # espeak sometimes re-fires a WORD event for an earlier text position at a clause start
    # (e.g. position of "begin." again before "I'll" in "...begin. I'm glad... I'll"); a word
    # event never moves backwards in the text, so drop those.
    kept, furthest = [], -1
    for pos, sample in events:
        if pos >= furthest:
            kept.append((pos, sample))
            furthest = pos
    events = kept
    owner = np.searchsorted(starts, [pos for pos, _ in events], side="right") - 1
    bounds = [sample for _, sample in events] + [n_samples]
    pause_arr = np.array(sorted(pauses) + [n_samples])
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for k, tok in enumerate(owner):
        start = bounds[k]
        end = min(bounds[k + 1], int(pause_arr[np.searchsorted(pause_arr, start, side="right")]))
        first.setdefault(int(tok), start)
        last[int(tok)] = max(end, start)
    weights = [float(len(split_punct(t)[1])) for t in tokens]
    spans: list[tuple[float, float] | None] = [None] * len(tokens)
    heads = sorted(first)
    for n, head in enumerate(heads):
        # (tokens before the first event, too: espeak said them with the first word)
        lo, hi = (0 if n == 0 else head), (heads[n + 1] if n + 1 < len(heads) else len(tokens))
        members = [i for i in range(lo, hi) if weights[i] > 0]
        total = sum(weights[i] for i in members)
        t, span = first[head] / sample_rate, (last[head] - first[head]) / sample_rate
        for i in members:
            spans[i] = (t, t + span * weights[i] / total)
            t = spans[i][1]
    return spans
