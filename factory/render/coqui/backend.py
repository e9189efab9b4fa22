"""The Coqui backend: options, the cache identity (a hash of this whole package), and
`synthesize_many`, which sends VITS requests of one model through `vits.render_batch` in padded
batches of `batch_size` sorted by length (default 16 on CUDA, 1 on CPU, where padding costs more
than batching saves; `batch_stats` counts the fill) and XTTS requests one by one through
`xtts.render`. See the package docstring for the voices it takes."""

from __future__ import annotations

from collections.abc import Sequence

from factory.languages import spaced
from factory.models import Utterance, Voice
from factory.render.base import (
    BackendOptions,
    BackendUnavailable,
    BatchStats,
    SynthesisRequest,
    TTSError,
    render_identity,
)
from factory.render.coqui import vits, xtts
from factory.render.coqui.models import INSTALL_HINT, Loaded, ModelStore, model_languages
from factory.render.text import check_params, check_text

DEFAULT_BATCH = 16


class CoquiBackend:
    name = "coqui"

    class Options(BackendOptions):
        device: str | None = None  # "cuda", "cuda:1", "cpu"; default: CUDA when available
        batch_size: int | None = None  # texts per padded batch; default 16 on CUDA, 1 on CPU

    def __init__(
        self, options: Options | None = None, *, device: str | None = None, batch_size: int | None = None
    ) -> None:
        options = options or self.Options(device=device, batch_size=batch_size)
        self.options = options
        device, batch_size = options.device, options.batch_size
        try:  # lazy: torch and coqui-tts are optional heavy dependencies (the coqui environment only)
            import torch  # lazy: as above
            import TTS.api  # noqa: F401  # lazy: as above
        except ImportError as exc:
            raise BackendUnavailable(f"{INSTALL_HINT} ({exc})") from exc
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # Batches pay off on a GPU; on CPU padding costs more than it saves (measured: 8 texts
        # batched 0.66 s per s of audio vs 0.41 one by one, 2 cores), so CPU goes one by one.
        self.batch_size = batch_size or (DEFAULT_BATCH if self.device.startswith("cuda") else 1)
        self.models = ModelStore(self.device)
        self.batch_stats = BatchStats()
        self.split_batches = 0  # batches that failed whole and were decoded in halves

    def cache_identity(self) -> str:
        # The device is part of it: CUDA kernels do not give CPU's bytes. The code hashed is the
        # whole package (models, VITS, XTTS).
        package = __name__.rpartition(".")[0]
        return render_identity(package, ("coqui-tts", "torch", "transformers"), f"device={self.device}")

    @classmethod
    def languages(cls, voice: Voice, options: Options) -> frozenset[str]:
        """The languages `voice`'s model speaks (`models.model_languages`: XTTS's list, a VITS
        model's language), read without torch or the weights where the model's name tells, less
        those written without spaces: this backend's word times (VITS durations, XTTS alignment)
        map whitespace tokens, so it does not speak Japanese yet."""
        return frozenset(code for code in model_languages(voice.model) if spaced(code))

    # ------------------------------------------------------------------ public API
    def speakers(self, voice: Voice) -> list[str]:
        """Speaker names of the voice's model (built-in XTTS speakers for XTTS)."""
        return list(self.models.load(voice).api.speakers or [])

    def synthesize(self, text: str, voice: Voice, *, rate: float = 1.0) -> Utterance:
        result = self.synthesize_many([SynthesisRequest(text, voice, rate)])[0]
        if isinstance(result, TTSError):
            raise result
        return result

    def synthesize_many(
        self, requests: Sequence[SynthesisRequest], *, batch_size: int | None = None
    ) -> list[Utterance | TTSError]:
        """Render a batch, in request order; a request that fails holds its TTSError. VITS
        requests of one model (any speakers, rates, languages) go through the flow and the
        decoder as padded batches of `batch_size` (default the backend's), sorted by length;
        each item's audio and word times equal its one-at-a-time render (see `vits.render_batch`).
        XTTS renders one by one, reusing each reference clip's conditioning latents."""
        out: list[Utterance | TTSError | None] = [None] * len(requests)
        by_model: dict[str, list[tuple[int, list[str], Loaded, int | None]]] = {}
        for i, r in enumerate(requests):
            try:
                voice = r.voice
                if voice.backend != "coqui":
                    raise TTSError(f"voice {voice.id} is for backend {voice.backend!r}, not coqui")
                if not r.rate > 0:
                    raise TTSError(f"rate must be > 0, got {r.rate}")
                tokens = check_text(r.text)
                loaded = self.models.load(voice)
                if loaded.kind == "vits":
                    check_params(voice.params, vits.VITS_PARAMS, "coqui vits")
                    by_model.setdefault(voice.model, []).append((i, tokens, loaded, vits.speaker_id(loaded, voice)))
                elif loaded.kind == "xtts":
                    check_params(voice.params, xtts.XTTS_PARAMS, "coqui xtts")
                    self.batch_stats.add(1, 1)
                    out[i] = xtts.render(r.text, tokens, voice, loaded, r.rate)
                else:
                    raise TTSError(
                        f"coqui model {voice.model!r} is a {loaded.kind!r} model; this backend supports "
                        "VITS (own word durations) and XTTS (cloning)"
                    )
            except TTSError as exc:
                out[i] = exc
        size = max(1, batch_size or self.batch_size)
        for items in by_model.values():
            items.sort(key=lambda item: len(requests[item[0]].text))
            for at in range(0, len(items), size):
                chunk = items[at : at + size]
                rendered, splits = vits.render_batch(
                    [(requests[i], tokens, speaker) for i, tokens, _, speaker in chunk], chunk[0][2]
                )
                self.split_batches += splits
                self.batch_stats.add(len(chunk), size)
                for (i, *_), result in zip(chunk, rendered, strict=True):
                    out[i] = result
        return [r for r in out if r is not None]

    # ------------------------------------------------------------------ VITS
