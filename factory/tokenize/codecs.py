"""Neural codec tokenizers (torch environment, `.envs/coqui`): Mimi and EnCodec.

- **Mimi** (Kyutai; Moshi's codec): 24 kHz in, 12.5 Hz, 8 of its 32 RVQ codebooks by default
  (what Moshi models), 2048 codes each. Through kyutai's own `moshi` package (`get_mimi`, the
  code moshi-finetune tokenizes with) or transformers' `MimiModel` (`backend="transformers"`).
  Weights: `tokenizer-e351c8d8-checkpoint125.safetensors` of the Hugging Face repo
  `kyutai/moshiko-pytorch-bf16` (moshi backend), or the repo `kyutai/mimi` (transformers).
- **EnCodec 24 kHz** (Meta), through transformers' `EncodecModel`: 75 Hz, 1024 codes per
  codebook, 2/4/8/16/32 codebooks for 1.5/3/6/12/24 kbps. Weights: the repo
  `facebook/encodec_24khz`.

`weights=` takes a local file or folder; None looks in the Hugging Face cache only (offline:
`local_files_only=True`). When nothing is found the error names the repo and file to download.
`random_init_seed=N` builds the real model class with random weights and random codebooks (a
freshly built quantizer's codebooks are all zeros and would give one constant code): for
tests and shape checks only; its identity has no weights hash.

Frame rule (both, measured by tests/coqui/test_tokenize_codecs.py against the models): the
codecs are causal and pad the input with zeros to a whole number of frames, so
T = ceil(n_samples_at_24kHz / samples_per_frame) = ceil(duration * frame_rate) after resampling
with `factory.audio.edit.resample` (soxr HQ, soxr's own length). Batches are zero-padded on the
right to the longest item and each result trimmed to its own frame count where that equals
encoding one by one (moshi's Mimi); the others batch only equal lengths (tested: batched codes equal one-by-one codes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from factory.audio.edit import resample
from factory.tokenize.base import AudioTokenizer, TokenizerIdentity, TokenizerUnavailable, ceil_frames
from factory.tokenize.progress import progress_map

MIMI_REPO = "kyutai/moshiko-pytorch-bf16"
MIMI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"
MIMI_HF_REPO = "kyutai/mimi"
ENCODEC_REPO = "facebook/encodec_24khz"
ENCODEC_BANDWIDTHS = {1.5: 2, 3.0: 4, 6.0: 8, 12.0: 16, 24.0: 32}
TORCH_ENV_HINT = (
    "this tokenizer needs torch: run it in the torch environment (built by `make envs`; "
    "`duplex-factory export` goes there by itself)"
)


def _torch():
    try:
        import torch  # lazy: optional (torch environment only), heavy
    except ImportError as exc:
        raise TokenizerUnavailable(TORCH_ENV_HINT) from exc
    return torch


@lru_cache(maxsize=8)
def _sha256(path: str) -> str:
    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")) if Path(path).is_dir() else [Path(path)]:
        if p.is_file() and p.suffix in (".safetensors", ".bin", ".json", ".pt", ".pth", ".model", ""):
            if Path(path).is_dir():
                h.update(p.relative_to(path).as_posix().encode() + b"\0")
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
    return h.hexdigest()


def randomize_codebooks(model: Any, seed: int, scale: float = 0.01) -> None:
    """Give every codebook of a freshly built Mimi/EnCodec random Gaussian entries, so a
    randomly initialised model gives varied codes (its codebooks start as zeros). `scale`: a
    random encoder's latents are small; with unit-variance entries one entry is nearest to
    every latent (measured: one code per codebook), at 0.01 the codes vary with the input."""
    torch = _torch()
    gen = torch.Generator().manual_seed(seed)
    n = 0
    for module in model.modules():
        for attr in ("embedding_sum", "embed_sum", "embed"):  # moshi / transformers Mimi / EnCodec
            buf = module._buffers.get(attr) if hasattr(module, "_buffers") else None
            if buf is None:
                continue
            buf.data.copy_(torch.randn(buf.shape, generator=gen) * scale)
            n += 1
            if "cluster_usage" in module._buffers:
                module._buffers["cluster_usage"].data.fill_(1.0)
            if "_initialized" in module._buffers:  # moshi: an uninitialised codebook would re-init
                module._buffers["_initialized"].data.fill_(1.0)
            for cache in ("_embedding", "_embed"):  # cached embedding_sum / usage
                if cache in getattr(module, "_buffers", {}):
                    module._buffers[cache] = None
                elif hasattr(module, cache):
                    setattr(module, cache, None)
            if hasattr(module, "_cached_initialized"):
                module._cached_initialized = False
    if n == 0:
        raise TypeError(f"no codebook found in {type(model).__name__}")


def _resolve_file(weights: str | Path | None, repo: str, filename: str, what: str) -> Path:
    """A weights file: `weights` itself, `weights/filename`, or the HF cache's copy."""
    if weights is not None:
        path = Path(weights)
        path = path / filename if path.is_dir() else path
        if not path.is_file():
            raise TokenizerUnavailable(
                f"{what} weights not found at {path}: download {filename} from the Hugging Face repo {repo} "
                f"(huggingface-cli download {repo} {filename} --local-dir DIR) and pass weights=DIR"
            )
        return path
    # lazy: the Hub client loads slowly, and only weights found by repo id in its cache need it
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, local_files_only=True))
    except Exception as exc:  # LocalEntryNotFoundError and friends: not in the cache
        raise TokenizerUnavailable(
            f"{what} weights are not in the Hugging Face cache: download {filename} from the repo {repo} "
            f"(huggingface-cli download {repo} {filename}), or pass weights=PATH to a local copy"
        ) from exc


def _resolve_folder(weights: str | Path | None, repo: str, what: str) -> Path:
    """A transformers model folder: `weights`, or the HF cache's snapshot of `repo`."""
    if weights is not None:
        path = Path(weights)
        if not (path / "config.json").is_file():
            raise TokenizerUnavailable(
                f"{what}: {path} is not a model folder (no config.json): download the repo {repo} "
                f"(huggingface-cli download {repo} --local-dir DIR) and pass weights=DIR"
            )
        return path
    # lazy: the Hub client loads slowly, and only weights found by repo id in its cache need it
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except Exception as exc:
        raise TokenizerUnavailable(
            f"{what} weights are not in the Hugging Face cache: download the repo {repo} "
            f"(huggingface-cli download {repo}: config.json and model.safetensors), or pass weights=DIR"
        ) from exc


class _TorchCodec:
    """Shared resampling, batching and identity of the codec tokenizers."""

    name: str
    sample_rate: int
    frame_rate: float
    n_q: int
    cardinality: int
    samples_per_frame: int
    batch_size: int
    # Right zero-padding leaves the frames of moshi's Mimi unchanged (causal, constant padding:
    # tested). transformers' MimiModel and EncodecModel give other codes for padded items
    # (measured; EnCodec pads its convolutions by reflection), so they batch only items of equal
    # length (the two channels of one dialogue are).
    pad_batches: bool = True
    _weights: Path | None
    _seed: int | None
    _backend: str

    def n_frames(self, n_samples: int, sr: int) -> int:
        return ceil_frames(n_samples, sr, self.frame_rate)

    def _prepare(self, audio: np.ndarray, sr: int) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"{self.name} takes mono audio [n], got shape {audio.shape}")
        if sr != self.sample_rate:
            audio = resample(audio, sr, self.sample_rate, length="soxr")
        return audio

    def _encode_padded(self, batch: np.ndarray) -> np.ndarray:  # [B, N] -> [B, n_q, T]
        raise NotImplementedError

    def _encode_group(self, items: list[tuple[np.ndarray, int]]) -> list[np.ndarray]:
        torch = _torch()
        longest = max(len(a) for a, _ in items)
        padded = np.zeros((len(items), max(longest, 1)), dtype=np.float32)
        for i, (a, _) in enumerate(items):
            padded[i, : len(a)] = a
        with torch.inference_mode():
            codes = self._encode_padded(padded)
        out = []
        for i, (_, t) in enumerate(items):
            c = codes[i, :, :t]
            if c.shape[1] < t:  # cannot happen for a causal codec with ceil framing; stays loud
                raise RuntimeError(f"{self.name} gave {c.shape[1]} frames, want {t}")
            out.append(np.ascontiguousarray(c, dtype=np.int64))
        return out

    def encode(self, audio: np.ndarray, sr: int) -> np.ndarray:
        t = self.n_frames(len(audio), sr)
        if t == 0:
            return np.zeros((self.n_q, 0), dtype=np.int64)
        return self._encode_group([(self._prepare(audio, sr), t)])[0]

    def encode_batch(self, audios: Sequence[np.ndarray], sr: int) -> list[np.ndarray]:
        frames = [self.n_frames(len(a), sr) for a in audios]
        # Longest first, so each padded batch holds items of similar length.
        order = sorted(range(len(audios)), key=lambda i: (-len(audios[i]), i))
        order = [i for i in order if frames[i] > 0]
        results: dict[int, np.ndarray] = {i: np.zeros((self.n_q, 0), np.int64) for i in range(len(audios))}
        if self.pad_batches:
            batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        else:  # only equal lengths share a batch (e.g. the two channels of one dialogue)
            batches = []
            for i in order:
                if batches and len(audios[batches[-1][0]]) == len(audios[i]) and len(batches[-1]) < self.batch_size:
                    batches[-1].append(i)
                else:
                    batches.append([i])

        def run(idx: list[int]) -> None:
            codes = self._encode_group([(self._prepare(audios[i], sr), frames[i]) for i in idx])
            results.update(zip(idx, codes))

        progress_map(run, batches, f"{self.name} codes")
        return [results[i] for i in range(len(audios))]

    def identity(self) -> TokenizerIdentity:
        return TokenizerIdentity(
            name=self.name,
            version=f"{self._backend} {version(self._backend)}, torch {version('torch')}",
            weights_sha256=None if self._weights is None else _sha256(str(self._weights)),
            config={
                "n_q": self.n_q,
                "frame_rate": self.frame_rate,
                "sample_rate": self.sample_rate,
                "weights": None if self._weights is None else self._weights.name,
                "random_init_seed": self._seed,
            },
        )


class MimiTokenizer(_TorchCodec):
    name = "mimi"

    def __init__(
        self,
        weights: str | Path | None = None,
        n_q: int = 8,
        backend: str = "moshi",
        random_init_seed: int | None = None,
        device: str = "cpu",
        batch_size: int = 8,
    ) -> None:
        torch = _torch()
        if not 1 <= n_q <= 32:
            raise ValueError(f"Mimi has 32 codebooks; n_q must be 1..32, got {n_q}")
        self.n_q, self.batch_size, self._seed, self.device = n_q, batch_size, random_init_seed, device
        if backend == "moshi":
            try:
                from moshi.models import loaders  # lazy: optional (torch environment only)
            except ImportError as exc:
                hint = f"Mimi through kyutai's moshi package: pip install moshi. {TORCH_ENV_HINT}"
                raise TokenizerUnavailable(hint) from exc
            self._backend = "moshi"
            if random_init_seed is None:
                self._weights = _resolve_file(weights, MIMI_REPO, MIMI_FILE, "Mimi")
                self.model = loaders.get_mimi(self._weights, device=device, num_codebooks=n_q)
            else:
                self._weights = None
                torch.manual_seed(random_init_seed)  # the module initialisers draw from torch's global state
                self.model = loaders.get_mimi(None, device=device, num_codebooks=n_q)
                randomize_codebooks(self.model, random_init_seed)
            self.sample_rate = int(self.model.sample_rate)
            self.frame_rate = float(self.model.frame_rate)
            self.cardinality = int(self.model.cardinality)
            self.samples_per_frame = int(self.model.frame_size)
        elif backend == "transformers":
            from transformers import MimiConfig, MimiModel  # lazy: optional (torch environment only)

            self._backend = "transformers"
            self.pad_batches = False
            if random_init_seed is None:
                self._weights = _resolve_folder(weights, MIMI_HF_REPO, "Mimi (transformers)")
                self.model = MimiModel.from_pretrained(self._weights, local_files_only=True)
            else:
                self._weights = None
                torch.manual_seed(random_init_seed)
                self.model = MimiModel(MimiConfig())
                randomize_codebooks(self.model, random_init_seed)
            cfg = self.model.config
            self.sample_rate = int(cfg.sampling_rate)
            self.frame_rate = float(cfg.frame_rate)
            self.cardinality = int(cfg.codebook_size)
            self.samples_per_frame = round(self.sample_rate / self.frame_rate)
        else:
            raise ValueError(f"Mimi backend must be 'moshi' or 'transformers', got {backend!r}")
        self.model = self.model.to(device).eval()

    def _encode_padded(self, batch: np.ndarray) -> np.ndarray:
        torch = _torch()
        x = torch.from_numpy(batch)[:, None, :].to(self.device)
        if self._backend == "moshi":
            codes = self.model.encode(x)
        else:
            codes = self.model.encode(x, num_quantizers=self.n_q).audio_codes
        return codes.cpu().numpy()

    def identity(self) -> TokenizerIdentity:
        ident = super().identity()
        ident.config["backend"] = self._backend
        return ident


class EncodecTokenizer(_TorchCodec):
    name = "encodec"

    def __init__(
        self,
        weights: str | Path | None = None,
        bandwidth: float = 6.0,
        random_init_seed: int | None = None,
        device: str = "cpu",
        batch_size: int = 8,
    ) -> None:
        torch = _torch()
        from transformers import EncodecConfig, EncodecModel  # lazy: optional (torch environment only)

        if float(bandwidth) not in ENCODEC_BANDWIDTHS:
            raise ValueError(f"EnCodec 24 kHz bandwidth must be one of {sorted(ENCODEC_BANDWIDTHS)} kbps")
        self._backend, self.batch_size, self._seed, self.device = "transformers", batch_size, random_init_seed, device
        self.pad_batches = False
        self.bandwidth = float(bandwidth)
        if random_init_seed is None:
            self._weights = _resolve_folder(weights, ENCODEC_REPO, "EnCodec")
            self.model = EncodecModel.from_pretrained(self._weights, local_files_only=True)
        else:
            self._weights = None
            torch.manual_seed(random_init_seed)
            self.model = EncodecModel(EncodecConfig())  # the default config is encodec_24khz's
            randomize_codebooks(self.model, random_init_seed)
        self.model = self.model.to(device).eval()
        cfg = self.model.config
        if cfg.chunk_length_s is not None:
            raise TokenizerUnavailable("only the unchunked EnCodec 24 kHz is supported (chunk_length_s must be null)")
        self.sample_rate = int(cfg.sampling_rate)
        self.samples_per_frame = int(np.prod(cfg.upsampling_ratios))
        self.frame_rate = self.sample_rate / self.samples_per_frame
        self.cardinality = int(cfg.codebook_size)
        self.n_q = ENCODEC_BANDWIDTHS[self.bandwidth]

    def _encode_padded(self, batch: np.ndarray) -> np.ndarray:
        torch = _torch()
        x = torch.from_numpy(batch)[:, None, :].to(self.device)
        out = self.model.encode(x, bandwidth=self.bandwidth)
        return out.audio_codes[0].cpu().numpy()  # [chunks=1, B, n_q, T] -> [B, n_q, T]

    def identity(self) -> TokenizerIdentity:
        ident = super().identity()
        ident.config["bandwidth_kbps"] = self.bandwidth
        return ident


def build(name: str, **options: Any) -> AudioTokenizer:
    if name == "mimi":
        return MimiTokenizer(**options)
    if name == "encodec":
        return EncodecTokenizer(**options)
    raise ValueError(f"unknown codec tokenizer {name!r}")
