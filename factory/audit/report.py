"""The static HTML report of an audit, and the audit's part of the dataset card.

`write_report(result, out)` writes `out/index.html` (headline measures against their bands, the
FTO histogram and per-sample distributions, shard table, WER per voice, flagged samples, the
worst samples under each measure, every sample's row) and `out/samples/<id>.html` for up to
`players` samples (the worst ones first): `<audio>` players for the stereo mix and each channel,
the lanes figure under them with a play cursor, and buttons that jump to each barge-in. Plain
HTML, no external resources, opens from disk.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import soundfile as sf

from factory.atomic import atomic_write_text
from factory.audio.edit import resample
from factory.audit.figures import distributions_figure, fto_figure, lanes_figure
from factory.audit.fonts import FONT_FAMILY, FontMissing, cjk_chars, font_face_css
from factory.audit.gates import row_language, wer_per_voice
from factory.audit.measures import audit_sample
from factory.audit.run import RunAudit, iter_samples, worst
from factory.conversation.bands import HEADLINE
from factory.export.card import write_card

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}
th{background:#f3f3f3}.out{color:#b00;font-weight:bold}.in{color:#070}img{max-width:100%}
.note{color:#a60}.problem{color:#b00}audio{width:32%;min-width:250px}.lanes{position:relative;display:inline-block;max-width:100%}
.cursor{position:absolute;top:0;bottom:0;width:2px;background:#c00;pointer-events:none}
code{background:#f6f6f6}
"""


def _f(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-" if v is None or v != v else str(v)
    return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))


def headline_rows(result: RunAudit, language: str | None = None) -> list[tuple[str, str, str, str, str]]:
    """(measure, value, band, in band, reference) for the headline measures, primary detector,
    each language's samples against its own bands (all the run's languages when `language` is
    None; a measure is prefixed "ja: " when the run has several). A band borrowed from English
    reads "[lo, hi] (English band)"."""
    languages = result.languages if language is None else [language]
    prefix = len(result.languages) > 1
    return [
        (
            (f"{lang}: " if prefix else "") + row.measure,
            _f(row.values[0]),
            row.band.shown(),
            row.in_band,
            row.band.source,
        )
        for lang in languages
        for row in result.headline(lang)
    ]


def update_card(result: RunAudit) -> Path | None:
    """Rewrite a run folder's README.md (dataset card) with the audit's headline measures and its
    FTO plot; only for a run folder with a manifest (a bare dataset folder is left alone)."""
    run_dir = result.run_dir
    if not isinstance(run_dir, Path):  # a remote run's URL: no folder here to write a card into
        return None
    manifest = run_dir / "manifest.parquet"
    if not manifest.is_file() or not result.rows:
        return None
    fto = [x for r in result.rows for x in r.get(f"{result.vads[0]}_fto") or []]
    fto_figure(fto, run_dir / "audit_fto.png", language=result.languages[0] if len(result.languages) == 1 else "en")
    summary = (
        f"{len(result.rows)} dialogues audited with the {result.vads[0]} VAD "
        f"({sum(bool(r.get('flags')) for r in result.rows)} flagged by the gates; `audit.parquet`)."
    )
    if result.languages != ["en"]:
        summary += (
            f" Languages: {', '.join(result.languages)}; each judged by its own published bands, "
            'English\'s where none is published (marked "English band", not gated).'
        )
    card = write_card(
        result.config,
        pl.read_parquet(manifest),
        run_dir,
        audit={"summary": summary, "rows": headline_rows(result), "plot": "audit_fto.png"},
    )
    path = run_dir / "README.md"
    atomic_write_text(path, card)
    return path


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _page(title: str, body: str, font_css: str = "", lang: str = "en") -> str:
    """A page; `font_css` (an embedded Japanese font subset, `factory.audit.fonts`) is declared
    when the page holds Japanese text, listed last so Latin text keeps the system font."""
    style = CSS
    if font_css and cjk_chars(title + body):
        family = f"'{FONT_FAMILY}'"
        style += (
            f"{font_css}\nbody{{font-family:system-ui,sans-serif,{family}}}code{{font-family:monospace,{family}}}\n"
        )
    return (
        f"<!doctype html><html lang={html.escape(lang)}><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><link rel=icon href='data:,'><style>{style}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def _write_audio(stems: np.ndarray, sr: int, path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "ogg":  # Opus at its lowest bitrate (~6 kbit/s a channel): small enough to share, still intelligible
        if sr not in OPUS_RATES:
            stems, sr = resample(stems, sr, 48_000, length="soxr"), 48_000
        sf.write(path, stems, sr, format="OGG", subtype="OPUS", compression_level=1.0)
    else:
        sf.write(path, stems, sr, format="FLAC", subtype="PCM_16")


def _sample_page(sample, audit, out: Path, fmt: str, back: str, font_css: str = "") -> Path:
    sid = sample.id
    ext = "ogg" if fmt == "ogg" else "flac"
    mime = "audio/ogg" if fmt == "ogg" else "audio/flac"
    sr = sample.sample_rate
    for name, data in (("mix", sample.stems), ("user", sample.stems[:, 0]), ("agent", sample.stems[:, 1])):
        _write_audio(data, sr, out / "audio" / f"{sid}.{name}.{ext}", fmt)
    img, (x0, x1) = lanes_figure(sample, audit, out / "img" / f"{sid}.lanes.png")
    players = "".join(
        f"<figure style='display:inline-block;margin:0 4px'><figcaption>{label}</figcaption>"
        f"<audio controls preload=auto data-role={name} src='../audio/{sid}.{name}.{ext}' type='{mime}'></audio>"
        "</figure>"
        for name, label in (("mix", "stereo mix"), ("user", "channel 0: user"), ("agent", "channel 1: agent"))
    )
    jumps = (
        "".join(
            f"<button data-t='{max(0.0, b.onset_plan - 1.0):.2f}'>barge-in {i + 1} by "
            f"{'user' if b.by == 0 else 'agent'} at {b.onset_plan:.2f} s "
            f"(stop latency plan {b.latency_plan:.2f} s, audio {_f(b.latency_audio)} s)</button> "
            for i, b in enumerate(audit.barge_ins)
        )
        or "no barge-ins"
    )
    row = audit.row
    measures = _table(
        ["measure", "value"],
        [[html.escape(k), _f(v)] for k, v in row.items() if not isinstance(v, list) and k not in ("id",)],
    )
    transcript = "<br>".join(
        html.escape(f"[{t.start:6.2f}-{t.end:6.2f}] {t.channel.value}: {t.spoken_text}")
        + (" <b>[interrupted]</b>" if t.end_reason.value == "interrupted" else "")
        for t in sample.timeline.turns
    )
    dur = len(sample.stems) / sr
    body = (
        f"<p><a href='{back}'>&larr; report</a></p><h1>{html.escape(sid)}</h1>"
        f"<p>{html.escape(row.get('flag_reason') or 'passes the gates')}</p>{players}"
        f"<p>jump to: {jumps}</p>"
        f"<div class=lanes id=lanes data-x0='{x0:.4f}' data-x1='{x1:.4f}' data-dur='{dur:.3f}'>"
        f"<img src='../img/{img.name}' alt='waveforms and timeline lanes of {html.escape(sid)}'>"
        "<div class=cursor id=cursor></div></div>"
        "<p>Lanes: turns (blue turn, green backchannel, red laugh; red tick = interrupted stop), words, "
        "backchannels, barge-ins (pink = planned onset to stop; red dots = onset and stop found in the audio), "
        "overlaps found in the audio (red = floor transfer, brown = within-speaker), hesitations (purple filler, "
        "grey pause, pink restart), each detector's activity.</p>"
        f"<h2>Transcript</h2><p><code>{transcript}</code></p><h2>Measures</h2>{measures}"
        "<script>\n"
        "const mix=document.querySelector('audio[data-role=mix]');const lanes=document.getElementById('lanes');\n"
        "const cur=document.getElementById('cursor');\n"
        "function place(t){const x0=+lanes.dataset.x0,x1=+lanes.dataset.x1,d=+lanes.dataset.dur;"
        "cur.style.left=(100*(x0+(x1-x0)*Math.min(t/d,1)))+'%';}\n"
        "document.querySelectorAll('audio').forEach(a=>a.addEventListener('timeupdate',()=>place(a.currentTime)));\n"
        "document.querySelectorAll('button[data-t]').forEach(b=>b.addEventListener('click',()=>{"
        "mix.currentTime=+b.dataset.t;place(mix.currentTime);mix.play().catch(()=>{});}));\n"
        "place(0);\n</script>"
    )
    path = out / "samples" / f"{sid}.html"
    atomic_write_text(path, _page(f"{sid} - audit", body, font_css, sample.meta.scenario.language))
    return path


def write_report(result: RunAudit, out: Path, players: int = 12, audio_format: str = "flac") -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = result.frame()
    primary = result.vads[0]
    pooled = result.pooled[primary]
    fto = [x for r in result.rows for x in r.get(f"{primary}_fto") or []]
    languages = result.languages
    mixed = len(languages) > 1
    fto_figure(fto, out / "img" / "fto.png", language=languages[0] if not mixed else "en")
    # one distributions figure per language (its samples against its bands)
    dist_imgs = {}
    for lang in languages:
        name = f"distributions-{lang}.png" if mixed else "distributions.png"
        rows = frame.filter(pl.col("language").fill_null("en").str.split("-").list.first() == lang) if mixed else frame
        distributions_figure(
            rows, result.by_language.get(lang, result.pooled)[primary], primary, out / "img" / name, lang
        )
        dist_imgs[lang] = name
    # which samples get players: the worst under each headline measure first, then flagged, then in order
    column = {m: m if m in frame.columns else f"{primary}_{m}" for m in HEADLINE}
    worst_by = {m: worst(frame, m, 3, column[m]) for m in HEADLINE}
    chosen: list[str] = []
    for ids in worst_by.values():
        for i in ids[:1]:
            if i not in chosen:
                chosen.append(i)
    chosen += [r["id"] for r in result.rows if r.get("flags") and r["id"] not in chosen]
    chosen += [r["id"] for r in result.rows if r["id"] not in chosen]
    chosen = chosen[: max(0, players)]
    pages = {}
    # without a store the audit was built on a local folder (audit_run sets it for every URL)
    players_of = [s for _, s in iter_samples(result.store or Path(result.run_dir), ids=set(chosen))]
    # one font subset for the whole report: the Japanese characters of its transcripts and rows
    text = "".join(t.spoken_text for s in players_of for t in s.timeline.turns) + "".join(
        f"{r['id']}{r.get('flag_reason') or ''}" for r in result.rows
    )
    text += "".join(result.notes + result.problems)
    try:
        font_css = font_face_css(text)
    except FontMissing as exc:  # the report is still worth having; it says why its Japanese shows as boxes
        font_css = ""
        result.problems.append(str(exc))
    for sample in players_of:
        audit = audit_sample(sample, vads=result.vads, asr_turns=0)
        audit.row = next(r for r in result.rows if r["id"] == sample.id)
        pages[sample.id] = _sample_page(sample, audit, out, audio_format, "../index.html", font_css)

    def link(sid: str) -> str:
        target = f"samples/{sid}.html" if sid in pages else f"#row-{sid}"
        return f"<a href='{html.escape(target)}'>{html.escape(sid)}</a>"

    heads = []
    for lang in languages:
        head_rows = []
        for row in result.headline(lang):
            cls = {"yes": "in", "no": "out"}.get(row.in_band, "")
            band = html.escape(row.band.label()) + (
                f" <span class=note>({html.escape(row.band.tag)})</span>" if row.band.tag else ""
            )
            if row.band.metric and row.band.metric != "WER":
                band += f" ({html.escape(row.band.metric)})"
            head_rows.append(
                [
                    row.measure,
                    *[_f(v) for v in row.values],
                    band,
                    f"<span class={cls}>{row.in_band}</span>",
                    html.escape(row.band.source),
                ]
            )
        n = sum(1 for r in result.rows if row_language(r) == lang)
        title = f"<h3>{html.escape(lang)}: {n} dialogues</h3>" if mixed else ""
        heads.append(
            title
            + _table(["measure", f"{primary} (primary)", *result.vads[1:], "band", "in band", "reference"], head_rows)
        )
    head = "".join(heads)
    shard_rows = [
        [
            html.escape(name),
            str(int(rep["pooled"]["n_samples"])),
            str(rep["flagged"]),
            _f(rep["pooled"]["fto_p50_s"]),
            _f(rep["pooled"]["transitions_in_overlap"]),
            _f(rep["pooled"]["overlap_share"]),
            (
                "<span class=out>" + html.escape("; ".join(rep["problems"])) + "</span>"
                if rep["problems"]
                else "<span class=in>none</span>"
            )
            + (
                " <span class=note>not gated: " + html.escape(", ".join(rep["not_gated"])) + "</span>"
                if rep.get("not_gated")
                else ""
            ),
        ]
        for name, rep in result.shards.items()
    ]
    shards = _table(
        ["shard", "samples", "flagged", "FTO p50", "in overlap", "overlap share", "out of band / problems"],
        shard_rows,
    )
    voices = wer_per_voice(result.rows)
    # WER, or CER for a language written without spaces (a voice speaks one language)
    metrics = "/".join(sorted({r.get("asr_metric") or "WER" for r in result.rows if r.get("asr_wers")})) or "WER"
    wer_table = (
        _table(
            ["voice", metrics, "turns"],
            [[html.escape(v), _f(d["wer"]), str(int(d["turns"]))] for v, d in voices.items()],
        )
        if voices
        else "<p>no ASR round trip in this audit</p>"
    )
    worst_rows = [
        [m, ", ".join(link(i) + f" ({_f(frame.filter(pl.col('id') == i)[c].item())})" for i in ids)]
        for m, ids in worst_by.items()
        if ids
        for c in [column[m]]
    ]
    cols = [
        "language",
        "duration_s",
        f"{primary}_fto_p50_s",
        f"{primary}_overlap_share",
        "planned_found",
        "audio_explained",
        "barge_ins_found",
        "stop_latency_s",
        "asr_wer",
        "flag_reason",
    ]
    cols = [c for c in cols if c in frame.columns]
    sample_rows = [
        [f"<span id='row-{html.escape(r['id'])}'>{link(r['id'])}</span>", *[_f(r.get(c)) for c in cols]]
        for r in result.rows
    ]
    notes = "".join(f"<p class=note>note: {html.escape(n)}</p>" for n in result.notes)
    dist_html = "".join(
        (f"<h3>{html.escape(lang)}</h3>" if mixed else "") + f"<img src='img/{name}' alt='distributions {lang}'>"
        for lang, name in dist_imgs.items()
    )
    languages_note = (
        ""
        if languages == ["en"]
        else f"; languages {', '.join(languages)}: each judged by its own published bands, English's where none is "
        "published (marked <span class=note>(English band)</span>: shown, not gated)"
    )
    problems = "".join(f"<p class=problem>problem: {html.escape(p)}</p>" for p in result.problems)
    body = (
        f"<h1>Audit of {html.escape(result.run_dir.name)}</h1>"
        f"<p>{len(result.rows)} dialogues, {pooled['duration_s'] / 60:.1f} min, detectors "
        f"{', '.join(result.vads)} (primary {primary}); "
        f"{sum(bool(r.get('flags')) for r in result.rows)} flagged by the gates. Bands: "
        "<code>factory/conversation/bands.py</code> (human: Switchboard / published; purple: quality promises)"
        f"{languages_note}.</p>"
        f"{notes}{problems}<h2>Headline measures (pooled {'per language' if mixed else 'over the run'})</h2>{head}"
        "<h2>Floor-transfer offsets</h2><img src='img/fto.png' alt='FTO histogram'>"
        f"<h2>Distributions against the bands</h2>{dist_html}"
        f"<h2>Shards</h2>{shards}<h2>ASR round trip: {metrics} per voice</h2>{wer_table}"
        f"<h2>Worst samples per measure</h2>{_table(['measure', 'samples (value)'], worst_rows)}"
        f"<h2>Samples</h2>{_table(['id', *cols], sample_rows)}"
        f"<script>window.auditSummary={json.dumps({'samples': len(result.rows), 'players': len(pages)})};</script>"
    )
    index = out / "index.html"
    atomic_write_text(index, _page(f"audit of {result.run_dir.name}", body, font_css))
    return index
