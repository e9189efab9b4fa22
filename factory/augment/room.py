"""Room reverberation: a bank of image-source RIRs simulated with pyroomacoustics (seeded room
size, absorption and positions; the image-source method is bit-identical across runs, its ray
tracing is not, so it is off), or a user folder of measured RIRs; applied with audiomentations'
`ApplyImpulseResponse`, its IR file drawn from our generator and frozen on the transform.

The bank is simulated once per (size, seed, rate, ranges) and cached as WAV files, so every
process of a run uses the same files."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import ClassVar

import numpy as np
import soundfile as sf

from factory.augment.base import AugmentContext, AugmentError, Options, Params, options_of

BANK_VERSION = "1"


def simulate_rir_bank(folder: Path, sr: int, n_rooms: int, seed: int, rt60: tuple[float, float]) -> list[dict]:
    """Write `n_rooms` RIRs (000.wav ...) and `bank.json` (each room's parameters) into `folder`."""
    import pyroomacoustics as pra  # lazy: optional (cpu extra), heavy

    rng = np.random.default_rng(seed)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rooms = []
    for i in range(n_rooms):
        dims = np.array([rng.uniform(3.0, 8.0), rng.uniform(3.0, 6.0), rng.uniform(2.4, 3.5)])
        target = float(rng.uniform(*rt60))
        try:
            e_absorption, max_order = pra.inverse_sabine(target, dims)
        except ValueError:  # a reverberation time this room cannot have: the most reverberant it can
            e_absorption, max_order = 0.05, 20
        max_order = int(min(max_order, 12))  # higher orders add little but time
        src = rng.uniform(0.5, dims - 0.5)
        mic = rng.uniform(0.5, dims - 0.5)
        room = pra.ShoeBox(  # image sources only: ray tracing is off by default (and not reproducible)
            dims, fs=sr, materials=pra.Material(float(e_absorption)), max_order=max_order, air_absorption=False
        )
        room.add_source(src.tolist())
        room.add_microphone(mic.tolist())
        room.compute_rir()
        assert room.rir is not None  # compute_rir filled it
        rir = np.asarray(room.rir[0][0], np.float64)
        rir = (rir / np.max(np.abs(rir))).astype(np.float32)
        sf.write(tmp / f"{i:03d}.wav", rir, sr, subtype="FLOAT")
        rooms.append(
            {
                "file": f"{i:03d}.wav",
                "room_m": [round(float(d), 3) for d in dims],
                "rt60_s": round(target, 3),
                "absorption": round(float(e_absorption), 4),
                "max_order": max_order,
                "source_m": [round(float(v), 3) for v in src],
                "mic_m": [round(float(v), 3) for v in mic],
            }
        )
    (tmp / "bank.json").write_text(json.dumps(rooms, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)  # complete or absent: another process never sees half a bank
    return rooms


def rir_bank(cache_dir: Path, sr: int, n_rooms: int, seed: int, rt60: tuple[float, float]) -> tuple[Path, list[dict]]:
    import pyroomacoustics as pra  # lazy: optional (cpu extra), heavy

    key = json.dumps([BANK_VERSION, pra.__version__, sr, n_rooms, seed, list(rt60)])
    folder = Path(cache_dir) / f"rir-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if not (folder / "bank.json").exists():
        simulate_rir_bank(folder, sr, n_rooms, seed, rt60)
    return folder, json.loads((folder / "bank.json").read_text())


class Room:
    name: ClassVar[str] = "room"
    stereo_only: ClassVar[bool] = False

    class Options(Options):
        bank_size: int = 32
        bank_seed: int = 0
        rt60_s: tuple[float, float] = (0.2, 0.8)
        folder: Path | None = None  # measured RIRs instead of the simulated bank (default augment.rir_folder)

    def __init__(self, options: dict, context: AugmentContext):
        from audiomentations import ApplyImpulseResponse  # lazy: optional (cpu extra), heavy

        self.o = options_of(type(self), options)
        folder = self.o.folder or context.rir_folder
        if folder is not None:
            self.folder = Path(folder)
            if not self.folder.is_dir():
                raise AugmentError(f"room: RIR folder {self.folder} not found")
            self.rooms = [{"file": str(p.relative_to(self.folder))} for p in sorted(self.folder.rglob("*.wav"))]
            if not self.rooms:
                raise AugmentError(f"room: no .wav impulse responses under {self.folder}")
        else:
            self.folder, self.rooms = rir_bank(
                context.cache_dir, context.sample_rate, self.o.bank_size, self.o.bank_seed, self.o.rt60_s
            )
        self.transform = ApplyImpulseResponse(ir_path=str(self.folder), p=1.0, leave_length_unchanged=True)

    def __call__(self, audio: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
        room = self.rooms[int(rng.integers(len(self.rooms)))]
        t = self.transform
        t.parameters = {"should_apply": True, "ir_file_path": str(self.folder / room["file"])}
        t.freeze_parameters()
        out = t(samples=np.ascontiguousarray(audio.T), sample_rate=sr).T
        params: Params = {"rir": room["file"]}
        for k in ("rt60_s", "absorption", "max_order"):
            if k in room:
                params[k] = room[k]
        if "room_m" in room:
            params["room_m"] = "x".join(str(d) for d in room["room_m"])
        return np.ascontiguousarray(out, np.float32), params
