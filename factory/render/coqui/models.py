"""Coqui models: where a voice's model is (a local folder or a Coqui model name, never
downloaded unless COQUI_ALLOW_DOWNLOAD=1) and loading it once per (model, device)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory.languages import base
from factory.models import Voice
from factory.render.base import BackendUnavailable, TTSError

INSTALL_HINT = (
    "coqui-tts is not installed in this environment: run scripts/setup_coqui.sh (CPU) or "
    "pip install 'duplex-factory[gpu]' in a torch environment"
)
XTTS_V2 = "tts_models/multilingual/multi-dataset/xtts_v2"
# XTTS-v2's languages, as its config.json lists them (`languages`; coqui-tts's XttsConfig default,
# which tests/coqui checks this against): the model speaks these with any speaker or reference clip.
XTTS_V2_LANGUAGES = (
    "en",
    "es",
    "fr",
    "de",
    "it",
    "pt",
    "pl",
    "tr",
    "ru",
    "nl",
    "cs",
    "ar",
    "zh-cn",
    "hu",
    "ko",
    "ja",
    "hi",
)

CHECKPOINT_NAMES = ("model.pth", "model_file.pth", "model_file.pth.tar", "checkpoint.pth")


def _download_allowed() -> bool:
    return os.environ.get("COQUI_ALLOW_DOWNLOAD", "") == "1"


def _download_hint(name: str) -> str:
    if "xtts" in name:
        return (
            f"download it once on a machine with network: COQUI_TOS_AGREED=1 tts --model_name {name} "
            "--text hi --out_path /tmp/x.wav (or huggingface-cli download tts-hub/XTTS-v2 --local-dir DIR, "
            "formerly coqui/XTTS-v2, and set voice.model to DIR), or set COQUI_ALLOW_DOWNLOAD=1"
        )
    return (
        f"download it once on a machine with network: tts --model_name {name} --text hi "
        "--out_path /tmp/x.wav (see `tts --list_models`), copy the folder and set voice.model to it, "
        "or set COQUI_ALLOW_DOWNLOAD=1"
    )


def model_languages(spec: str) -> frozenset[str]:
    """The languages (primary subtags) a voice's model speaks, without loading it: a local model
    folder's config.json (XTTS: `languages`; VITS: its language ids file, else its phoneme
    language); XTTS-v2 by name: `XTTS_V2_LANGUAGES`; another Coqui model name: the language it
    names (`tts_models/en/vctk/vits` -> en). Raises `TTSError` without a model, and
    `BackendUnavailable` where the model's files are not here to tell."""
    if not spec:
        raise TTSError("coqui voices need `model`: a local model folder or a Coqui model name")
    path = Path(spec).expanduser()
    if path.exists():
        return _config_languages((path if path.is_dir() else path.parent) / "config.json")
    if spec == XTTS_V2:
        return frozenset(base(code) for code in XTTS_V2_LANGUAGES)
    parts = spec.split("/")
    if len(parts) == 4 and parts[0] == "tts_models" and parts[1] != "multilingual":
        return frozenset({base(parts[1])})
    raise BackendUnavailable(f"coqui model {spec!r} is not here: its languages cannot be read")


def _config_languages(config: Path) -> frozenset[str]:
    try:
        raw = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackendUnavailable(f"coqui model config {config} cannot be read ({exc})") from exc
    if raw.get("model") == "xtts":
        codes = list(raw.get("languages") or [])
    else:
        ids_file = raw.get("language_ids_file") or (raw.get("model_args") or {}).get("language_ids_file")
        candidates = [Path(ids_file), config.parent / Path(ids_file).name] if ids_file else []
        found = next((c for c in candidates if c.is_file()), None)
        if found is not None:
            codes = list(json.loads(found.read_text(encoding="utf-8")))
        else:
            codes = [raw["phoneme_language"]] if raw.get("phoneme_language") else []
    if not codes:
        raise BackendUnavailable(f"coqui model config {config} names no language (languages, language_ids_file)")
    return frozenset(base(str(code)) for code in codes)


@dataclass
class Loaded:
    """One loaded model on one device."""

    api: Any  # TTS.api.TTS
    model: Any  # the tts_model inside the synthesizer (Vits, Xtts, ...)
    kind: str  # "vits" | "xtts" | other config.model
    sample_rate: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    latents: dict[tuple[str, float, tuple], tuple[Any, Any]] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)


class ModelStore:
    """The models of one backend on one device, loaded through Coqui's own API
    (`TTS.api.TTS(model_path=..., config_path=...)`), moved to the device once and kept for the
    life of the store."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._models: dict[tuple[str, str], Loaded] = {}
        self._lock = threading.Lock()
        self._tmp = Path(tempfile.mkdtemp(prefix="coqui-configs-"))

    def resolve(self, spec: str) -> tuple[Path, Path]:
        """(checkpoint file or folder, config.json) of a voice's model, without downloading
        unless COQUI_ALLOW_DOWNLOAD=1."""
        if not spec:
            raise TTSError(
                "coqui voices need `model`: a local model folder or a Coqui model name "
                f"(e.g. tts_models/en/vctk/vits or {XTTS_V2})"
            )
        path = Path(spec).expanduser()
        if path.exists() or "/" in spec and not spec.startswith(("tts_models/", "voice_conversion_models/")):
            return self._local(path)
        return self._by_name(spec)

    def _local(self, path: Path) -> tuple[Path, Path]:
        if not path.exists():
            raise BackendUnavailable(
                f"coqui model folder {path} does not exist: it needs a checkpoint (model.pth) and config.json; "
                "download a model with `tts --model_name NAME --text hi --out_path x.wav` (names: "
                "`tts --list_models`) or XTTS-v2 from the Hugging Face hub (tts-hub/XTTS-v2, formerly "
                "coqui/XTTS-v2), and point voice.model at its folder"
            )
        folder = path if path.is_dir() else path.parent
        config = folder / "config.json"
        if not config.is_file():
            raise BackendUnavailable(f"coqui model {path}: no config.json in {folder}")
        if path.is_file():
            return path, config
        for name in CHECKPOINT_NAMES:
            if (folder / name).is_file():
                checkpoint = folder / name
                break
        else:
            found = sorted(folder.glob("best_model*.pth")) or sorted(folder.glob("*.pth"))
            found = [f for f in found if not f.name.startswith(("speakers", "speaker_ids", "model_se"))]
            if not found:
                raise BackendUnavailable(
                    f"coqui model folder {folder} has config.json but no checkpoint "
                    f"({', '.join(CHECKPOINT_NAMES)} or best_model*.pth)"
                )
            checkpoint = found[-1]
        if json.loads(config.read_text(encoding="utf-8")).get("model") == "xtts":
            for need in ("model.pth", "vocab.json"):
                if not (folder / need).is_file():
                    raise BackendUnavailable(f"XTTS model folder {folder} lacks {need}")
            return folder, config  # Xtts.load_checkpoint takes the folder
        return checkpoint, self._fix_paths(folder, config)

    def _fix_paths(self, folder: Path, config: Path) -> Path:
        """A model folder that was downloaded elsewhere and copied here keeps absolute paths
        (speakers file, stats...) from the machine it came from in config.json. Coqui fixes
        them at download time (`ModelManager._update_paths`); do the same on a private copy
        when a path in the config no longer exists, leaving the user's folder untouched."""
        raw = json.loads(config.read_text(encoding="utf-8"))
        keys = (
            "speakers_file",
            "d_vector_file",
            "language_ids_file",
            "speaker_encoder_model_path",
            "speaker_encoder_config_path",
        )

        def stale(section: dict) -> bool:
            for key in keys:
                value = section.get(key)
                values = value if isinstance(value, list) else [value]
                if any(isinstance(v, str) and v and not Path(v).is_file() for v in values):
                    return True
            return False

        stats = (raw.get("audio") or {}).get("stats_path")
        if not (stale(raw) or stale(raw.get("model_args") or {}) or (stats and not Path(stats).is_file())):
            return config
        from TTS.utils.manage import ModelManager  # lazy: coqui-tts, optional heavy dependency (torch)

        digest = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:12]
        copy = self._tmp / f"{digest}-config.json"
        shutil.copyfile(config, copy)
        ModelManager(progress_bar=False)._update_paths(folder, copy)
        return copy

    def _by_name(self, name: str) -> tuple[Path, Path]:
        from TTS.utils.manage import ModelManager  # lazy: coqui-tts, optional heavy dependency (torch)

        manager = ModelManager(progress_bar=False)
        try:
            item, full_name, _ = manager._set_model_item(name)
        except Exception as exc:  # unknown name: Coqui raises ValueError/KeyError
            raise BackendUnavailable(
                f"unknown Coqui model name {name!r} ({exc}); list them with "
                "`tts --list_models`, or set voice.model to a local folder"
            ) from exc
        folder: Path | None = manager.output_prefix / full_name
        if "repo_id" in item:  # hub models (XTTS) live in the Hugging Face cache
            # lazy: heavy to import (about 1 s) and only needed for hub-named models
            from huggingface_hub import snapshot_download

            try:
                folder = Path(
                    snapshot_download(
                        item["repo_id"],
                        allow_patterns=item.get("allow"),
                        ignore_patterns=item.get("ignore"),
                        local_files_only=True,
                    )
                )
            except Exception:  # noqa: BLE001 — not in the local HF cache (LocalEntryNotFoundError, ...)
                folder = None
        if folder is None or not (folder / "config.json").is_file():
            if not _download_allowed():
                raise BackendUnavailable(
                    f"Coqui model {name} is not downloaded (looked in "
                    f"{manager.output_prefix / full_name} and the Hugging Face cache); " + _download_hint(name)
                )
            try:
                model_path, config_path, _ = manager.download_model(name)
            except Exception as exc:
                raise BackendUnavailable(f"could not download Coqui model {name}: {exc}") from exc
            folder = Path(config_path).parent if Path(model_path).is_file() else Path(model_path)
        return self._local(folder)

    def load(self, voice: Voice) -> Loaded:
        key = (voice.model, self.device)
        with self._lock:
            loaded = self._models.get(key)
            if loaded is not None:
                return loaded
            checkpoint, config = self.resolve(voice.model)
            from TTS.api import TTS  # lazy: coqui-tts, optional heavy dependency (torch)

            try:
                api = TTS(model_path=str(checkpoint), config_path=str(config), progress_bar=False).to(self.device)
            except Exception as exc:
                raise TTSError(
                    f"coqui could not load model {voice.model!r} ({checkpoint}): {type(exc).__name__}: {exc}"
                ) from exc
            synth = api.synthesizer
            model = synth.tts_model
            kind = str(getattr(synth.tts_config, "model", type(model).__name__)).lower()
            loaded = Loaded(api=api, model=model, kind=kind, sample_rate=int(synth.output_sample_rate))
            self._models[key] = loaded
            return loaded
