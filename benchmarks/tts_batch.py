"""Batched TTS on this machine: the same renders one at a time in-process, through a process
pool, and through the TTS service with several concurrent clients, side by side in one run.

    .venv/bin/python benchmarks/tts_batch.py [--backends espeak,piper] [--processes 2] [--clients 4]
    .envs/coqui/bin/python benchmarks/tts_batch.py --backends coqui   # a random small VITS, CPU


Prints a table and writes benchmarks/results/tts_batch.json and tts_batch.md (coqui rows go to
tts_batch_coqui.json / .md: they run in the torch environment). Every mode first
renders one warm-up request (model load, worker start-up) that is timed separately, then the
same list of sentences; each mode's audio is checked byte-equal to the sequential one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from factory.models import Voice
from factory.render.base import SynthesisRequest, TTSError, synthesize_many
from factory.render.pool import PooledBackend
from factory.render.registry import get_backend
from factory.render.service import ServiceThread, TTSService
from factory.render.service_backend import ServiceBackend
from factory.render.voices import VoiceBank

RESULTS = Path(__file__).with_name("results")
SENTENCES = [
    "Well, I think we could try the other route, if the weather holds.",
    "Sure, first open the settings page and check which network you are on.",
    "Mm-hmm.",
    "That sounds great, but what about the cost of the train tickets?",
    "Right, okay.",
    "I was wondering whether you could help me plan a short trip next month.",
    "Yeah, that makes sense to me.",
    "Could you repeat the last part, please?",
    "So the meeting moved to Thursday at three in the afternoon.",
    "Uh, I'm not sure, let me check my calendar first.",
    "Oh, really?",
    "The battery lasts about ten hours if you turn the screen brightness down.",
]


def voices_for(name: str) -> list[Voice]:
    if name == "piper":
        return [Voice(id="bench-piper", backend="piper")]
    bank = VoiceBank.load()
    return [v for v in bank if v.backend == name][:2]


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def check_same(reference: list, got: list) -> bool:
    return all(
        not isinstance(a, TTSError) and not isinstance(b, TTSError) and a.audio.tobytes() == b.audio.tobytes()
        for a, b in zip(reference, got, strict=True)
    )


def row(backend: str, mode: str, reqs: list, wall: float, warm: float, out: list, same: bool, **extra) -> dict:
    audio_s = sum(u.duration for u in out if not isinstance(u, TTSError))
    return {
        "backend": backend,
        "mode": mode,
        "renders": len(reqs),
        "audio_s": round(audio_s, 2),
        "wall_s": round(wall, 3),
        "warmup_s": round(warm, 3),
        "renders_per_s": round(len(reqs) / wall, 2),
        "rtf": round(wall / audio_s, 4) if audio_s else None,
        "same_bytes_as_sequential": same,
        **extra,
    }


def bench(name: str, processes: int, clients: int) -> list[dict]:
    voices = voices_for(name)
    reqs = [SynthesisRequest(t, voices[i % len(voices)]) for i, t in enumerate(SENTENCES)]
    warm_req = [SynthesisRequest("Warm up.", voices[0])]
    rows = []

    direct = get_backend(name)
    warm, _ = timed(lambda: synthesize_many(direct, warm_req))
    wall, seq = timed(lambda: synthesize_many(direct, reqs))
    rows.append(row(name, "sequential (in-process)", reqs, wall, warm, seq, True))

    pool = PooledBackend(name, build=get_backend, processes=processes)
    try:
        warm, _ = timed(lambda: pool.synthesize_many(warm_req * processes))
        wall, out = timed(lambda: pool.synthesize_many(reqs))
        rows.append(row(name, f"process pool ({processes})", reqs, wall, warm, out, check_same(seq, out)))
    finally:
        pool.close()

    hosted = PooledBackend(name, build=get_backend, processes=processes)
    service = TTSService({name: hosted}, batch_size=16, max_wait_ms=20)
    try:
        with ServiceThread(service) as url:
            warm, _ = timed(lambda: ServiceBackend(url, name).synthesize_many(warm_req * processes))
            before = ServiceBackend(url, name).health()["stats"][name]
            parts = [reqs[k::clients] for k in range(clients)]
            results: dict[int, list] = {}

            def client(k: int) -> None:
                results[k] = ServiceBackend(url, name).synthesize_many(parts[k])

            def run_clients() -> None:
                threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()

            wall, _ = timed(run_clients)
            after = ServiceBackend(url, name).health()["stats"][name]
        out = [None] * len(reqs)
        for k in range(clients):
            out[k::clients] = results[k]
        batches = after["batches"] - before["batches"]
        items = after["items"] - before["items"]
        rows.append(
            row(
                name,
                f"service, {clients} clients (pool {processes})",
                reqs,
                wall,
                warm,
                out,
                check_same(seq, out),
                service_batches=batches,
                mean_batch=round(items / batches, 2) if batches else None,
                batch_fill=round(items / (batches * service.batch_size), 3) if batches else None,
            )
        )
    finally:
        hosted.close()
    return rows


def bench_coqui(clients: int) -> list[dict]:
    """Coqui VITS (randomly initialised, the real classes, small config) on CPU: one at a time
    vs padded batches vs the service. Audio is compared within 1e-4 (batched float kernels)."""
    import importlib.util
    import tempfile

    import numpy as np
    import torch

    from factory.render.coqui import CoquiBackend

    # One intra-op thread for every mode: torch's default (one per core) spin-waits under load on
    # a shared machine (measured at load ~5 on 2 cores: the same 4 renders 9.2 s with 2 threads,
    # 0.7 s with 1), and the service renders on a worker thread that does not inherit the setting.
    torch.set_num_threads(1)

    spec = importlib.util.spec_from_file_location("mk", Path(__file__).parents[1] / "scripts/make_coqui_test_models.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    folder = mk.build_vits(Path(tempfile.mkdtemp()) / "vits", n_speakers=4, small=True)
    voices = [Voice(id=f"v{k}", backend="coqui", model=str(folder), speaker=s) for k, s in enumerate(("p225", "p226"))]
    reqs = [SynthesisRequest(t, voices[i % 2]) for i, t in enumerate(SENTENCES)]
    warm_req = [SynthesisRequest("Warm up.", voices[0])]

    def close(ref: list, got: list) -> bool:
        return all(
            a.words == b.words and len(a.audio) == len(b.audio) and np.abs(a.audio - b.audio).max() <= 1e-4
            for a, b in zip(ref, got, strict=True)
        )

    rows = []
    backend = CoquiBackend(device="cpu")
    warm, _ = timed(lambda: backend.synthesize_many(warm_req))
    wall, seq = timed(lambda: backend.synthesize_many(reqs, batch_size=1))
    rows.append(row("coqui vits (random)", "sequential (batch 1)", reqs, wall, warm, seq, True))
    for size in (4, 12):
        wall, out = timed(lambda size=size: backend.synthesize_many(reqs, batch_size=size))
        rows.append(row("coqui vits (random)", f"padded batches of {size}", reqs, wall, 0.0, out, close(seq, out)))
    hosted = CoquiBackend(device="cpu", batch_size=12)
    service = TTSService({"coqui": hosted}, batch_size=12, max_wait_ms=50)
    with ServiceThread(service) as url:
        warm, _ = timed(lambda: ServiceBackend(url, "coqui").synthesize_many(warm_req))
        parts = [reqs[k::clients] for k in range(clients)]
        results: dict[int, list] = {}

        def run_clients() -> None:
            def client(k: int) -> None:
                results[k] = ServiceBackend(url, "coqui").synthesize_many(parts[k])

            threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        before = ServiceBackend(url, "coqui").health()["stats"]["coqui"]
        wall, _ = timed(run_clients)
        after = ServiceBackend(url, "coqui").health()["stats"]["coqui"]
    out = [None] * len(reqs)
    for k in range(clients):
        out[k::clients] = results[k]
    batches, items = after["batches"] - before["batches"], after["items"] - before["items"]
    rows.append(
        row(
            "coqui vits (random)",
            f"service, {clients} clients (batch 12)",
            reqs,
            wall,
            warm,
            out,
            close(seq, out),
            service_batches=batches,
            mean_batch=round(items / batches, 2) if batches else None,
        )
    )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backends", default="espeak,piper")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    console = Console()
    rows = []
    for name in args.backends.split(","):
        console.print(f"[bold]{name}[/bold] ...")
        rows.extend(bench_coqui(args.clients) if name == "coqui" else bench(name, args.processes, args.clients))
    stem = "tts_batch_coqui" if args.backends == "coqui" else "tts_batch"

    table = Table(title="TTS: sequential vs process pool vs service (same renders)")
    cols = ("backend", "mode", "renders", "audio s", "wall s", "renders/s", "RTF", "warm-up s", "mean batch", "same")
    for col in cols:
        table.add_column(col, justify="left" if col in ("backend", "mode") else "right")
    for r in rows:
        table.add_row(
            r["backend"],
            r["mode"],
            str(r["renders"]),
            f"{r['audio_s']:.1f}",
            f"{r['wall_s']:.2f}",
            f"{r['renders_per_s']:.2f}",
            f"{r['rtf']:.3f}",
            f"{r['warmup_s']:.2f}",
            str(r.get("mean_batch", "-")),
            "yes" if r["same_bytes_as_sequential"] else "NO",
        )
    console.print(table)

    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (shared)",
        "processes": args.processes,
        "clients": args.clients,
        "note": "RTF = wall seconds per second of audio (lower is faster). Warm-up (model load, worker "
        "start-up) is excluded from wall_s and shown separately. 'same' = bytes equal to the sequential "
        "renders (coqui: words and lengths equal, audio within 1e-4).",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# TTS batching: sequential vs process pool vs service",
        "",
        f"{meta['date']}, {meta['machine']}. {meta['note']}",
        "",
        "| backend | mode | renders | audio s | wall s | renders/s | RTF | warm-up s | mean batch | same bytes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['mode']} | {r['renders']} | {r['audio_s']:.1f} | {r['wall_s']:.2f} | "
            f"{r['renders_per_s']:.2f} | {r['rtf']:.3f} | {r['warmup_s']:.2f} | {r.get('mean_batch', '-')} | "
            f"{'yes' if r['same_bytes_as_sequential'] else 'NO'} |"
        )
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    console.print(f"wrote {RESULTS / stem}.json and .md")


if __name__ == "__main__":
    main()
