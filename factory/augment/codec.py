"""Lossy codec round trip: MP3 or Opus at a sampled bitrate, through pydub and ffmpeg. Opus is
encoded with ffmpeg's bitexact flags (identical bytes run to run) and decodes at 48 kHz; the
decoded audio is resampled back and trimmed or padded to the input length."""

from __future__ import annotations

import io
import shutil
from typing import ClassVar, Literal

import numpy as np

from factory.audio.edit import resample
from factory.audio.mix import to_pcm16
from factory.augment.base import AugmentContext, AugmentError, Options, Params, options_of

BITEXACT = ["-fflags", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1"]
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


class Codec:
    name: ClassVar[str] = "codec"
    stereo_only: ClassVar[bool] = False

    class Options(Options):
        codecs: list[Literal["mp3", "opus"]] = ["mp3", "opus"]
        mp3_kbps: list[int] = [32, 48, 64, 96]
        opus_kbps: list[int] = [12, 16, 24, 32]

    def __init__(self, options: dict, context: AugmentContext):
        self.o = options_of(type(self), options)
        if shutil.which("ffmpeg") is None:
            raise AugmentError("codec: ffmpeg not found (scripts/setup.sh installs Debian ffmpeg)")

    def __call__(self, audio: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
        from pydub import AudioSegment  # lazy: optional (cpu extra); warns at import when ffmpeg is missing

        codec = str(rng.choice(self.o.codecs))
        kbps = int(rng.choice(self.o.mp3_kbps if codec == "mp3" else self.o.opus_kbps))
        rate = sr if codec == "mp3" or sr in OPUS_RATES else 48000
        x = audio if rate == sr else np.stack([resample(audio[:, c], sr, rate) for c in range(audio.shape[1])], 1)
        seg = AudioSegment(data=to_pcm16(x).tobytes(), sample_width=2, frame_rate=rate, channels=x.shape[1])
        buf = io.BytesIO()
        if codec == "mp3":
            seg.export(buf, format="mp3", bitrate=f"{kbps}k", parameters=BITEXACT)
        else:
            seg.export(buf, format="opus", codec="libopus", bitrate=f"{kbps}k", parameters=BITEXACT)
        buf.seek(0)
        back = AudioSegment.from_file(buf, format="mp3" if codec == "mp3" else "ogg")
        y = np.asarray(back.get_array_of_samples(), np.float32).reshape(-1, back.channels) / 32768.0
        if back.frame_rate != sr:
            y = np.stack([resample(np.ascontiguousarray(y[:, c]), back.frame_rate, sr) for c in range(y.shape[1])], 1)
        out = np.zeros_like(audio, dtype=np.float32)
        n = min(len(y), len(audio))
        out[:n] = y[:n]
        return out, {"codec": codec, "kbps": kbps}
