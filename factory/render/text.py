"""Helpers shared by the TTS backends: token handling, mapping engine word units onto
whitespace tokens, and turning raw engine output into a contract-abiding `Utterance`.

Every backend works the same way: it renders the text and gets time spans for its own word
units (phoneme words, espeak WORD events); `map_spans` (or the backend, where the engine
names the token) turns them into one span per `text.split()` token, and `build_utterance`
trims the audio to speech, fits the spans to it and checks the result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from factory.audio.edit import gate_silence, resample
from factory.audio.vad import moving_power
from factory.models import Utterance, WordTiming
from factory.render.base import TTSError

_EDGE_PUNCT = re.compile(r"^([^\w]*)(.*?)([^\w]*)$", re.UNICODE)

# Backchannels and fillers that espeak's English rules spell out letter by letter ("mm" ->
# "em em", "hm" -> "aitch em", "mhm" -> "em aitch em") or misread ("uhh" -> "ooh", "yeah" ->
# "yeh"). IPA in espeak's notation, so the espeak-IPA engines (Piper, Kokoro) take it as is.
# Tokens espeak already says well ("uh-huh", "um", "uh", "er", "okay", "oh") are not listed.
INTERJECTION_IPA: dict[str, str] = {
    **dict.fromkeys(("mm-hmm", "mm-hm", "mmhmm", "mmhm", "mhm", "m-hm", "mhmm", "uh-hum"), "ʌmhˈʌm"),
    **dict.fromkeys(("hmm", "hm", "hmmm", "hmmmm"), "hˈʌm"),
    **dict.fromkeys(("mm", "mmm", "mmmm"), "ˈʌm"),
    **dict.fromkeys(("uhh", "uhhh"), "ˈʌ"),
    "uhhuh": "ʌhˈʌ",
    "uh-uh": "ˈʌʔʌ",  # the negative one, with its glottal stop
    "mmkay": "mkˈeɪ",
    "yeah": "jˈɛə",
}

MAX_CHARS = 2000  # longer inputs belong to several utterances; the engines degrade past this


def split_punct(token: str) -> tuple[str, str, str]:
    """'"Mm-hmm,"' -> ('"', 'Mm-hmm', ',"'): leading punctuation, core, trailing punctuation."""
    match = _EDGE_PUNCT.match(token)
    assert match is not None  # the pattern matches any string
    return match.group(1), match.group(2), match.group(3)


def interjection_ipa(token: str) -> str | None:
    """espeak-style IPA for a backchannel/filler token, or None for ordinary words.
    A cut-off word ("I-") keeps its hyphen out of the lookup."""
    core = split_punct(token)[1].lower()
    return INTERJECTION_IPA.get(core)


def check_text(text: str) -> list[str]:
    tokens = text.split()
    if not tokens:
        raise TTSError("cannot synthesise empty text")
    if len(text) > MAX_CHARS:
        raise TTSError(f"text is {len(text)} characters; split it into utterances of <= {MAX_CHARS}")
    if not any(re.search(r"\w", t) for t in tokens):
        raise TTSError(f"nothing speakable in {text!r} (punctuation only)")
    return tokens


def check_params(params: dict[str, object], known: set[str], backend: str) -> None:
    unknown = sorted(set(params) - known)
    if unknown:
        raise TTSError(f"{backend}: unknown voice params {unknown}; known: {sorted(known)}")


# --------------------------------------------------------------------------- prosody of a turn
# A sentence end inside a turn that a TTS reads as a continuation: its final fall becomes a comma's
# non-final contour. People holding the floor mostly do not fall: in the Columbia Games Corpus 24.7 %
# of the stretches of speech before a hold end in a fall (ToBI L-L%) against 47.2 % before a smooth
# switch (Gravano & Hirschberg 2011, Computer Speech & Language 25(3), table 6.1); a TTS that reads
# a turn as one text falls at every full stop, so a pause inside a turn sounds like its end.
CONTINUED_FALLS = {".": ",", "!": ",", "。": "，", "！": "，", "।": ","}  # noqa: RUF001 - CJK punctuation
_CLOSERS = frozenset("\"'”’»)]")  # noqa: RUF001 - closing quotes
# Tokens whose full stop is no sentence end (the next word is capitalised all the same).
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "sra", "vs", "mme", "hr", "frau"})
_TOKEN = re.compile(r"\S+")


def continuation_text(text: str, rng: np.random.Generator, fall_share: float) -> str:
    """`text` as the TTS reads it: each sentence end before the turn's last word (a full stop or
    exclamation mark, the next word not lower case) becomes a comma, except a share `fall_share`
    of them (drawn in order from `rng`) that keep their fall. Only those characters change, so
    `text.split()` keeps its tokens' number and order (the words the render's times belong to);
    `as_written` puts the script's own tokens back on the render."""
    if fall_share >= 1.0:
        return text
    matches = list(_TOKEN.finditer(text))
    out, cursor = [], 0
    for here, after in zip(matches, matches[1:], strict=False):
        lead, core, trail = split_punct(here.group())
        if not _is_sentence_end(core, trail, after.group()) or rng.random() < fall_share:
            continue
        at = here.start() + len(lead) + len(core)  # the sentence end's character
        out.append(text[cursor:at] + CONTINUED_FALLS[trail[0]])
        cursor = at + 1
    return "".join(out) + text[cursor:]


def _is_sentence_end(core: str, trail: str, following: str) -> bool:
    if not core or not trail or trail[0] not in CONTINUED_FALLS or not set(trail[1:]) <= _CLOSERS:
        return False  # "...", "?!", "!!": not a plain fall
    if "." in core or core.lower() in _ABBREVIATIONS or (len(core) == 1 and core.isupper()):
        return False  # U.S., Dr., J. Smith
    letters = [c for c in following if c.isalpha()]
    return not (letters and letters[0].islower())


def as_written(utt: Utterance, text: str) -> Utterance:
    """A render of `continuation_text(text, ...)` carrying the script's own `text` and words (what
    the timeline and the transcripts say), its audio and times unchanged. The two texts differ only
    in single characters, so each word (a substring of the text the TTS read, in order: whitespace
    tokens, or a language's own words such as Japanese accent phrases) takes the same span of `text`."""
    if utt.text == text:
        return utt
    if len(utt.text) != len(text):
        raise ValueError(f"{text!r} is not what its render read ({utt.text!r}) up to punctuation")
    words, cursor = [], 0
    for w in utt.words:
        at = utt.text.find(w.word, cursor)
        if at < 0:
            raise ValueError(f"word {w.word!r} is not in the text its render read ({utt.text!r})")
        words.append(w.model_copy(update={"word": text[at : at + len(w.word)]}))
        cursor = at + len(w.word)
    return utt.model_copy(update={"text": text, "words": words})


# --------------------------------------------------------------------------- word mapping
def group_align(
    token_weights: Sequence[float], unit_weights: Sequence[float], max_group: int = 5
) -> list[tuple[range, range]]:
    """Partition tokens and engine units into the same number of contiguous groups, each
    group one-to-one, one-to-many or many-to-one, so that group weights (e.g. phoneme counts)
    agree best. Engines merge words ("of the" -> one phoneme word) and split them ("1995" ->
    three), so counts rarely match by chance; weights from each token alone decide where.
    Dynamic programming in a band around the diagonal (merges and splits drift the path only
    a little), widened to the full table if the band holds no path."""
    n, m = len(token_weights), len(unit_weights)
    band = 16 + abs(n - m)
    return _align(token_weights, unit_weights, max_group, band) or _align(token_weights, unit_weights, max_group, n + m)


def _align(
    token_weights: Sequence[float], unit_weights: Sequence[float], max_group: int, band: int
) -> list[tuple[range, range]]:
    n, m = len(token_weights), len(unit_weights)
    tw = np.concatenate([[0.0], np.cumsum(token_weights)]).tolist()
    uw = np.concatenate([[0.0], np.cumsum(unit_weights)]).tolist()
    moves = [(1, k) for k in range(1, max_group + 1)] + [(k, 1) for k in range(2, max_group + 1)]
    cost: dict[tuple[int, int], float] = {(0, 0): 0.0}
    back: dict[tuple[int, int], tuple[int, int]] = {}
    for i in range(n + 1):
        center = i * m / n if n else 0
        for j in range(max(0, int(center) - band), min(m, int(center) + band) + 1):
            here = cost.get((i, j))
            if here is None:
                continue
            for di, dj in moves:
                a, b = i + di, j + dj
                if a > n or b > m:
                    continue
                sa, sb = tw[a] - tw[i], uw[b] - uw[j]
                # relative size mismatch, plus a small price per merge so 1:1 wins ties
                c = here + abs(sa - sb) / max(sa, sb, 1.0) + 0.15 * (di + dj - 2)
                if c < cost.get((a, b), math.inf):
                    cost[(a, b)] = c
                    back[(a, b)] = (i, j)
    if (n, m) not in cost:
        if band < n + m:
            return []
        raise TTSError(f"cannot map {n} tokens onto {m} engine word units")
    groups: list[tuple[range, range]] = []
    a, b = n, m
    while (a, b) != (0, 0):
        i, j = back[(a, b)]
        groups.append((range(i, a), range(j, b)))
        a, b = i, j
    return groups[::-1]


def map_spans(
    tokens: Sequence[str], token_weights: Sequence[float], units: Sequence[tuple[float, float, float]]
) -> list[tuple[float, float] | None]:
    """Time span per token from engine units (start, end, weight). Tokens with weight 0 (pure
    punctuation: "—", "...") get None; the caller pins them to their neighbours. A group of
    several tokens sharing one unit splits its span in proportion to the token weights."""
    spans: list[tuple[float, float] | None] = [None] * len(tokens)
    speakable = [i for i, w in enumerate(token_weights) if w > 0]
    units = [u for u in units if u[1] > u[0] or u[2] > 0]
    if not speakable or not units:
        raise TTSError(f"engine produced no words for {' '.join(tokens)!r}")
    groups = group_align([token_weights[i] for i in speakable], [u[2] for u in units])
    for tok_range, unit_range in groups:
        start, end = units[unit_range.start][0], units[unit_range.stop - 1][1]
        weights = [token_weights[speakable[k]] for k in tok_range]
        edges = start + (end - start) * np.concatenate([[0.0], np.cumsum(weights)]) / sum(weights)
        for k, t in enumerate(tok_range):
            spans[speakable[t]] = (float(edges[k]), float(edges[k + 1]))
    return spans


# --------------------------------------------------------------------------- audio
def speech_mask(audio: np.ndarray, sample_rate: int, rel_db: float = -40.0) -> np.ndarray:
    """Per-sample speech activity: a 5 ms RMS envelope above `rel_db` of its maximum (robust
    to isolated clicks, unlike a raw sample threshold). The energy VAD of `factory.audio.vad` at
    sample resolution, which trimming to speech needs (its 10 ms frames are too coarse)."""
    env = np.sqrt(moving_power(audio, max(1, int(0.005 * sample_rate))))
    peak = float(env.max()) if env.size else 0.0
    if peak < 1e-4:
        raise TTSError("engine produced silent audio")
    return env > peak * 10 ** (rel_db / 20)


def build_utterance(
    text: str,
    voice_id: str,
    audio: np.ndarray,
    sample_rate: int,
    tokens: Sequence[str],
    spans: Sequence[tuple[float, float] | None],
    margin: float = 0.005,
) -> Utterance:
    """Trim to speech (keeping `margin` s), shift spans onto the trimmed audio with the first
    and last word pinned to the speech edges, clamp them monotonic, non-overlapping and
    inside the speech, shrink each to the speech inside it, keep the peak <= 0.99 by
    scaling (never clipping), and make the quiet stretches inside it digital zero
    (`gate_silence`: the engine's own pauses become the same silence as the gaps between turns)."""
    audio = np.asarray(audio, dtype=np.float32).ravel()
    if audio.size == 0 or not np.all(np.isfinite(audio)):
        raise TTSError(f"engine produced empty or non-finite audio for {text!r}")
    mask = speech_mask(audio, sample_rate)
    active = np.flatnonzero(mask)
    on, off = int(active[0]), int(active[-1]) + 1
    pad = int(margin * sample_rate)
    lo, hi = max(0, on - pad), min(len(audio), off + pad)
    audio, mask = audio[lo:hi].copy(), mask[lo:hi]
    peak = float(np.abs(audio).max())
    if peak > 0.99:
        audio *= np.float32(0.99 / peak)
    # the engine's floor in its own pauses becomes the digital zero of the gaps between turns
    audio = gate_silence(audio, mask, sample_rate)
    speech_on, speech_off = (on - lo) / sample_rate, (off - lo) / sample_rate

    # The trimmed audio starts and ends with speech, which belongs to the first/last word:
    # pin those edges to it. Engines misplace edges (a last phoneme that absorbs the trailing
    # silence, a first one that starts late), so the edges are set, not the interior warped.
    shift = lo / sample_rate
    shifted = [None if s is None else (s[0] - shift, s[1] - shift) for s in spans]
    spoken = [i for i, s in enumerate(shifted) if s is not None]
    first, last = spoken[0], spoken[-1]
    shifted[first] = (speech_on, shifted[first][1])
    shifted[last] = (min(shifted[last][0], speech_off), speech_off)
    words = place_words(tokens, shifted, mask, speech_on, speech_off, sample_rate)
    return Utterance(text=text, voice_id=voice_id, sample_rate=sample_rate, audio=audio, words=words)


def place_words(
    tokens: Sequence[str],
    spans: Sequence[tuple[float, float] | None],
    mask: np.ndarray,
    speech_on: float,
    speech_off: float,
    sample_rate: int,
) -> list[WordTiming]:
    """Clamp spans monotonic, non-overlapping and inside [speech_on, speech_off], shrink each to
    the speech inside it (`mask`: per-sample activity), then grow it over the speech run it
    starts and ends in (`_cover_speech`). Unspeakable tokens (None) get a zero-length span where
    they sit."""
    words: list[WordTiming] = []
    cursor = 0.0
    for tok, span in zip(tokens, spans, strict=True):
        if span is None:
            words.append(WordTiming(word=tok, start=cursor, end=cursor))
            continue
        start = min(max(span[0], cursor, speech_on), speech_off)
        end = min(max(span[1], start), speech_off)
        # a word neither starts nor ends in silence (engines hand pauses to a neighbour phoneme)
        a, b = round(start * sample_rate), round(end * sample_rate)
        inside = np.flatnonzero(mask[a:b])
        if inside.size:
            start, end = (a + inside[0]) / sample_rate, (a + inside[-1] + 1) / sample_rate
        words.append(WordTiming(word=tok, start=start, end=end))
        cursor = end
    return _cover_speech(words, mask, sample_rate)


def _cover_speech(words: list[WordTiming], mask: np.ndarray, sample_rate: int) -> list[WordTiming]:
    """Grow each word over the speech run it starts and ends in, up to its neighbours: an engine's
    span can stop before the word's audible end (espeak's en-us+f3 echo, a slow decay) or start
    after its onset, and speech left between a word and the pause beside it would be silence by
    the timeline (a pause that starts with the last syllable's tail: smoke-train read that as
    "the turn goes on"). Zero-length tokens stay at the end of the word before them."""
    quiet = np.flatnonzero(~mask)
    n = len(mask)
    spoken = [k for k, w in enumerate(words) if w.end > w.start]
    out = list(words)
    for i, k in enumerate(spoken):
        w = out[k]
        lo = out[spoken[i - 1]].end if i else 0.0
        hi = words[spoken[i + 1]].start if i + 1 < len(spoken) else n / sample_rate
        a, b = round(w.start * sample_rate), round(w.end * sample_rate)
        start, end = w.start, w.end
        if 0 <= a < n and mask[a]:
            j = int(np.searchsorted(quiet, a))
            start = max((quiet[j - 1] + 1 if j else 0) / sample_rate, lo)
        if 0 < b <= n and mask[b - 1]:
            j = int(np.searchsorted(quiet, b - 1))
            end = min((quiet[j] if j < len(quiet) else n) / sample_rate, hi)
        out[k] = WordTiming(word=w.word, start=min(start, w.start), end=max(end, w.end))
    last_end = 0.0
    for k, w in enumerate(out):
        if w.end > w.start:
            last_end = w.end
        elif w.start < last_end:
            out[k] = WordTiming(word=w.word, start=last_end, end=last_end)
    return out


def shift_pitch(
    audio: np.ndarray, units: list[tuple[float, float, float]], sample_rate: int, factor: float
) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    """Play the audio `factor` times faster by resampling: pitch and formants move together,
    as between a larger and a smaller speaker (keep it within a few semitones), with none of
    a phase vocoder's artefacts. Callers stretch durations by `factor` at synthesis so the
    tempo comes out as asked; unit times scale with the audio."""
    shifted = resample(audio, round(sample_rate * factor), sample_rate, length="soxr")
    scale = len(shifted) / len(audio)
    return shifted.astype(np.float32), [(s * scale, e * scale, w) for s, e, w in units]
