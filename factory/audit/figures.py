"""Figures of an audit: distributions against the human bands, and one dialogue's lanes under its
waveforms. PNGs are written palette-quantised (Pillow), a few tens of kB each."""

from __future__ import annotations

import math
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

from factory.audio.vad import speech_intervals
from factory.audit.fonts import FontMissing, use_in_matplotlib
from factory.audit.measures import SampleAudit
from factory.conversation.bands import Band, bands_for
from factory.models import BackchannelEvent, BargeInEvent, Channel, HesitationEvent, Sample, TurnKind

DIST_MEASURES = (
    "fto_p50_s",
    "transitions_in_overlap",
    "overlap_share",
    "gap_median_s",
    "ipu_median_s",
    "pause_median_s",
    "fillers_per_100_words",
    "barge_ins_per_minute",
    "stop_latency_s",
    "words_per_second",
    "planned_found",
    "asr_wer",
)
# Switchboard FTO quantiles (conversation.md), drawn over the run's FTO histogram
SWB_FTO = {"p10": -0.35, "p25": -0.11, "p50": 0.13, "p75": 0.35, "p90": 0.65}


def _plt():
    import matplotlib  # lazy: heavy, and only figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after the headless backend is chosen

    try:
        use_in_matplotlib()  # Japanese text as glyphs, not boxes
    except FontMissing:
        pass  # Latin text needs no extra font; a Japanese label would warn "Glyph ... missing"
    return plt


def save_png(fig, path: Path, dpi: int = 80) -> Path:
    """Save `fig` as a palette PNG (64 colours): plots need few, and it is ~4x smaller."""
    plt = _plt()
    buf = BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.open(buf).convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    img.save(path, optimize=True)
    return path


def _band(ax, band: Band | None) -> None:
    if band is None:
        return
    lo = band.low if band.low is not None else ax.get_xlim()[0]
    hi = band.high if band.high is not None else ax.get_xlim()[1]
    color = "#55A868" if band.human else "#8172B2"
    if band.not_gated:  # another language's band, or a reference: hatched, not filled
        ax.axvspan(lo, hi, facecolor="none", edgecolor=color, hatch="//", alpha=0.45, lw=0)
    else:
        ax.axvspan(lo, hi, color=color, alpha=0.18, lw=0)


def fto_figure(fto: list[float], path: Path, title: str = "", language: str = "en") -> Path:
    """The run's floor-transfer offsets (gaps +, overlaps -) with Switchboard's quantiles and the
    band of the median (`language`'s; the title says when it is English's)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 2.8))
    if fto:
        ax.hist(np.clip(fto, -1.5, 2.0), bins=np.arange(-1.5, 2.01, 0.05).tolist(), color="#4C72B0", alpha=0.85)
        med = float(np.median(fto))
        ax.axvline(med, color="#4C72B0", lw=2, label=f"this run: median {med:+.2f} s")
    for name, v in SWB_FTO.items():
        ax.axvline(v, color="#C44E52", ls="--", lw=1)
        ax.text(v, ax.get_ylim()[1] * 0.95, name, color="#C44E52", fontsize=7, ha="center", va="top")
    band = bands_for(language)["fto_p50_s"]
    _band(ax, band)
    ax.set_xlabel("floor-transfer offset, s (negative = overlap)")
    ax.set_ylabel("transitions")
    of_median = f"band of the median ({band.tag})" if band.tag else "band of the median"
    ax.set_title(title or f"Floor-transfer offsets; red dashed: Switchboard quantiles; green: {of_median}")
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return save_png(fig, path)


def distributions_figure(frame, pooled: dict[str, float], vad: str, path: Path, language: str = "en") -> Path:
    """Per-sample histograms of the headline measures, `language`'s human band shaded green
    (quality promises purple; a band borrowed from English says so), the pooled value as a line."""
    plt = _plt()
    bands = bands_for(language)
    cols = 4
    rows = math.ceil(len(DIST_MEASURES) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(12, 2.3 * rows))
    for ax, m in zip(axes.ravel(), DIST_MEASURES):
        col = m if m in frame.columns else f"{vad}_{m}"
        vals = (
            np.asarray([v for v in frame[col].to_list() if v is not None and np.isfinite(v)], float)
            if col in frame.columns
            else np.array([])
        )
        if len(vals):
            ax.hist(vals, bins=min(20, max(5, len(vals) // 2)), color="#4C72B0", alpha=0.85)
        pv = pooled.get(m, math.nan)
        if pv == pv:
            ax.axvline(pv, color="black", lw=1.5)
        band = bands[m]
        _band(ax, band)
        inside = band.contains(pv)
        ax.set_title(
            f"{m} = {pv:.3g}{chr(10) if band.tag else ' '}{'in' if inside else 'OUT of'} {band.shown()}",
            fontsize=8,
            color="black" if inside else "#C44E52",
        )
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(DIST_MEASURES) :]:
        ax.axis("off")
    scope = "" if language == "en" else f", {language} samples"
    hatched = "; hatched = not gated (English band, or a reference)" if any(b.not_gated for b in bands.values()) else ""
    fig.suptitle(
        f"per-sample distributions ({vad} VAD{scope}); line = pooled run value; shaded = band{hatched}", fontsize=9
    )
    fig.tight_layout()
    return save_png(fig, path)


def lanes_figure(sample: Sample, audit: SampleAudit, path: Path) -> tuple[Path, tuple[float, float]]:
    """Both waveforms with the timeline's lanes under them: turns per channel, words, backchannels,
    barge-in onsets and stops (plan and audio), overlaps found in the audio (H&E), hesitations,
    and each detector's activity per channel. Returns the path and the time axis' horizontal
    extent as fractions of the image width (for a play cursor)."""
    plt = _plt()
    tl, sr, stems = sample.timeline, sample.sample_rate, sample.stems
    dur = len(stems) / sr
    vads = list(audit.activity)
    lanes = ["user turns", "agent turns", "words", "backchannels", "barge-ins", "overlaps (audio)", "hesitations"]
    lanes += [f"VAD {v} {ch}" for v in vads for ch in ("user", "agent")]
    width = max(10.0, min(24.0, dur * 0.35))
    fig = plt.figure(figsize=(width, 2.2 + 0.22 * len(lanes)))
    gs = fig.add_gridspec(3, 1, height_ratios=[1, 1, 0.22 * len(lanes)], hspace=0.08, left=0.09, right=0.99)
    axes = [fig.add_subplot(gs[i]) for i in range(3)]
    step = max(1, len(stems) // 6000)  # a light waveform
    t = np.arange(0, len(stems), step) / sr
    for ch, ax in zip(Channel, axes[:2]):
        ax.plot(t, stems[::step, ch.index], color="0.45", lw=0.5)
        ax.set_ylim(-1, 1)
        ax.set_xlim(0, dur)
        ax.set_ylabel(f"{ch.value}\n{tl.voices[ch]}", fontsize=7, rotation=0, ha="right", va="center")
        ax.tick_params(labelbottom=False, labelsize=6)
    lane = axes[2]
    y = {name: len(lanes) - 1 - i for i, name in enumerate(lanes)}

    def bar(name: str, start: float, end: float, color: str, h: float = 0.7) -> None:
        lane.broken_barh([(start, max(end - start, 0.01))], (y[name] - h / 2, h), color=color)

    colors = {TurnKind.turn: "#4C72B0", TurnKind.backchannel: "#55A868", TurnKind.laugh: "#C44E52"}
    for turn in tl.turns:
        name = f"{turn.channel.value} turns"
        bar(name, turn.start, turn.end, colors.get(turn.kind, "#8172B2"))
        if turn.end_reason.value == "interrupted":
            lane.plot([turn.end], [y[name]], marker="|", color="#C44E52", ms=10)
    for w in tl.words:
        if w.spoken:
            bar("words", w.start, w.end, "#4C72B0" if w.channel is Channel.user else "#DD8452", 0.5)
    for e in tl.events:
        if isinstance(e, BackchannelEvent):
            bar("backchannels", e.start, e.end, "#55A868")
        elif isinstance(e, HesitationEvent):
            bar("hesitations", e.start, e.end, {"filler": "#8172B2", "pause": "0.6", "restart": "#DA8BC3"}[e.kind])
        elif isinstance(e, BargeInEvent):
            bar("barge-ins", e.onset, e.victim_stop, "#F2B6B6")
    for b in audit.barge_ins:
        if b.onset_audio is not None and b.stop_audio is not None:  # found
            lane.plot([b.onset_audio, b.stop_audio], [y["barge-ins"]] * 2, "o", color="#C44E52", ms=4)
    for seg in audit.conversation[vads[0]].segments:
        if seg.kind in ("between_overlap", "within_overlap"):
            bar("overlaps (audio)", seg.start, seg.end, "#937860" if seg.kind == "within_overlap" else "#C44E52")
    for v in vads:
        for ch, act in zip(("user", "agent"), audit.activity[v]):
            for s, e in speech_intervals(act, audit.frame_s):
                bar(f"VAD {v} {ch}", s, e, "0.35", 0.5)
    lane.set_yticks(list(y.values()), list(y.keys()), fontsize=6)
    lane.set_ylim(-0.6, len(lanes) - 0.4)
    lane.set_xlim(0, dur)
    lane.set_xlabel("seconds", fontsize=7)
    lane.tick_params(axis="x", labelsize=6)
    lane.grid(axis="x", color="0.9")
    pos = lane.get_position()
    extent = (float(pos.x0), float(pos.x1))
    return save_png(fig, path, dpi=90), extent
