"""Pooling per-sample audit rows into shard and run values, and the gates on both.

Pooled values weigh every event, not every dialogue: FTO quantiles over all transitions, the
overlap share over all speech, rates over all words or minutes, so a long dialogue counts for
its length. `sample_flags` applies the config's per-sample thresholds (`audit.*`) and says why
a sample fails; `shard_report` pools a shard and names the measures that leave their band.

Bands are per language (`factory.conversation.bands.bands_for`): a shard holding several languages
is pooled and judged once per language (each row's `language`), and a measure whose band for that
language is borrowed from English is reported, not gated (it is not that language's norm); so is
a band of the language's own that is a reference measured otherwise (`Band.gated` False).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from factory.config import AudioSection, AuditSection
from factory.conversation.bands import bands_for, base
from factory.conversation.measures import FTO_QUANTILES


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else math.nan


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def pool(rows: Sequence[dict], vad: str) -> dict[str, float]:
    """Run (or shard) values of the measures in the bands, pooled from per-sample audit rows,
    with the H&E measures of detector `vad`."""

    def cat(key: str) -> list[float]:
        return [float(x) for r in rows for x in (r.get(key) or []) if x == x]

    def total(key: str) -> float:
        return float(sum(r.get(key) or 0.0 for r in rows if r.get(key) == r.get(key)))

    fto = cat(f"{vad}_fto")
    out: dict[str, float] = {"n_samples": float(len(rows)), "duration_s": total("duration_s")}
    qs = np.quantile(fto, FTO_QUANTILES).tolist() if fto else [math.nan] * len(FTO_QUANTILES)
    for q, v in zip(FTO_QUANTILES, qs):
        out[f"fto_p{round(q * 100):02d}_s"] = v
    out["fto_mean_s"] = float(np.mean(fto)) if fto else math.nan
    out["n_transitions"] = float(len(fto))
    out["transitions_in_overlap"] = float(np.mean(np.asarray(fto) < 0)) if fto else math.nan
    out["fto_within_500ms"] = float(np.mean(np.abs(fto) <= 0.5 + 1e-9)) if fto else math.nan
    out["overlap_share"] = _ratio(total(f"{vad}_both_s"), total(f"{vad}_speech_s"))  # of turn speech
    if events := total(f"{vad}_event_s"):  # sound the agent must not answer (no events: no keys, as before)
        out["event_share"] = _ratio(events, events + total(f"{vad}_speech_s"))  # of all the detector heard
        out["plan_overlap_share"] = _ratio(total("plan_both_s"), total("plan_speech_s"))  # the timeline's words
    out["gap_median_s"] = _median(cat(f"{vad}_gaps"))
    out["between_overlap_median_s"] = _median(cat(f"{vad}_between_overlaps"))
    out["within_overlap_median_s"] = _median(cat(f"{vad}_within_overlaps"))
    out["pause_median_s"] = _median(cat(f"{vad}_pauses"))
    ipus = cat(f"{vad}_ipu_durations")
    out["ipu_median_s"] = _median(ipus)
    out["ipu_mean_s"] = float(np.mean(ipus)) if ipus else math.nan
    minutes = out["duration_s"] / 60
    out["backchannels_per_minute"] = _ratio(total(f"{vad}_n_backchannels"), minutes)
    out["fillers_per_100_words"] = _ratio(100 * total("fillers_found"), total("words"))
    out["words_per_second"] = _ratio(total("words"), total(f"{vad}_speech_s"))
    out["barge_ins_per_minute"] = _ratio(total("barge_ins_found"), minutes)
    out["barge_ins_found_share"] = _ratio(total("barge_ins_found"), total("barge_ins_planned"))
    out["stop_latency_s"] = _median(cat("stop_latency"))
    wers = cat("asr_wers")
    out["asr_wer"] = float(np.mean(wers)) if wers else math.nan
    for key in ("planned_found", "audio_explained"):
        vals = [r[key] for r in rows if r.get(key) == r.get(key) and r.get(key) is not None]
        out[key] = float(np.mean(vals)) if vals else math.nan
    return out


def wer_per_voice(rows: Iterable[dict]) -> dict[str, dict[str, float]]:
    """Mean WER and turns checked per voice, from the rows' ASR round trips."""
    by: dict[str, list[float]] = {}
    for r in rows:
        for voice, w in zip(r.get("asr_voices") or [], r.get("asr_wers") or []):
            by.setdefault(voice, []).append(float(w))
    return {v: {"wer": float(np.mean(ws)), "turns": float(len(ws))} for v, ws in sorted(by.items())}


def sample_flags(row: dict, gates: AuditSection, audio: AudioSection) -> list[str]:
    """Why a sample fails the per-sample gates (empty: it passes). NaN measures are not judged."""
    reasons = []

    def below(key: str, limit: float | None, what: str) -> None:
        v = row.get(key)
        if limit is not None and v is not None and v == v and v < limit:
            reasons.append(f"{what} {v:.3f} < {limit:g}")

    below("planned_found", gates.min_planned_found, "planned speech found in audio")
    below("audio_explained", gates.min_audio_explained, "audio speech explained by plan")
    planned = row.get("barge_ins_planned") or 0
    if gates.min_barge_ins_found is not None and planned:
        share = (row.get("barge_ins_found") or 0) / planned
        if share < gates.min_barge_ins_found:
            reasons.append(f"barge-ins found in audio {row.get('barge_ins_found')}/{planned}")
    if gates.max_stop_latency_s is not None:
        late = [x for x in row.get("stop_latency") or [] if x > gates.max_stop_latency_s]
        if late:
            reasons.append(f"interrupted speaker stops {max(late):.2f} s after onset > {gates.max_stop_latency_s:g}")
    w = row.get("asr_wer")
    if gates.max_asr_wer is not None and w is not None and w == w and w > gates.max_asr_wer:
        reasons.append(f"ASR {row.get('asr_metric') or 'WER'} {w:.2f} > {gates.max_asr_wer:g}")
    if gates.max_loudness_error_lu is not None:
        for ch in ("user", "agent"):
            lufs, peak = row.get(f"lufs_{ch}"), row.get(f"peak_dbfs_{ch}")
            if lufs is None or peak is None:
                continue
            if not math.isfinite(lufs):
                reasons.append(f"{ch} channel is silent")
                continue
            # quieter than the target is allowed when the peak ceiling limited the gain
            limited = peak >= audio.peak_dbfs - 0.5
            err = lufs - audio.target_lufs
            if err > gates.max_loudness_error_lu or (err < -gates.max_loudness_error_lu and not limited):
                reasons.append(f"{ch} loudness {lufs:.1f} LUFS, target {audio.target_lufs:g}")
            if peak > audio.peak_dbfs + 0.1:
                reasons.append(f"{ch} peak {peak:.2f} dBFS > {audio.peak_dbfs:g}")
    return reasons


def row_language(row: dict) -> str:
    """A row's language (primary subtag); rows of audits made before languages are English."""
    return base(row.get("language") or "en")


def by_language(rows: Sequence[dict]) -> dict[str, list[dict]]:
    """Rows grouped by language, languages in sorted order."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(row_language(r), []).append(r)
    return dict(sorted(out.items()))


def out_of_band(pooled: dict[str, float], measures: Iterable[str], language: str) -> tuple[list[str], list[str]]:
    """(the `measures` whose pooled value leaves `language`'s own band, as "name value outside
    [lo, hi]"; the measures not gated because their band for it is borrowed or only a reference, as
    "name (English band)" or "name (reference, not gated)")."""
    bands = bands_for(language)
    out, borrowed = [], []
    for m in measures:
        band = bands.get(m)
        if band is None or m not in pooled:
            continue
        if band.not_gated:
            borrowed.append(f"{m} ({band.tag})")
        elif not band.contains(pooled[m]):
            out.append(f"{m} {pooled[m]:.3f} outside {band.label()}")
    return out, borrowed


def shard_report(rows: Sequence[dict], gates: AuditSection, vad: str) -> dict:
    """Pooled values of a shard, the `shard_bands` measures outside their band, and the share of
    flagged samples (rows carry `flags`, a list of reasons). Each language of the shard is pooled
    and judged against its own bands; a problem names its language unless the shard is English only."""
    pooled = pool(rows, vad)
    groups = by_language(rows)
    problems, borrowed, pooled_by_language = [], [], {}
    for language, group in groups.items():
        values = pooled if len(groups) == 1 else pool(group, vad)
        pooled_by_language[language] = values
        out, lent = out_of_band(values, gates.shard_bands, language)
        prefix = "" if list(groups) == ["en"] else f"{language}: "
        problems += [prefix + p for p in out]
        borrowed += [prefix + b for b in lent]
    flagged = sum(bool(r.get("flags")) for r in rows)
    share = flagged / len(rows) if rows else 0.0
    if share > gates.max_flagged_share:
        problems.append(f"{flagged}/{len(rows)} samples flagged > {gates.max_flagged_share:.0%}")
    return {
        "pooled": pooled,
        "flagged": flagged,
        "problems": problems,
        "languages": pooled_by_language,  # language -> its pooled values
        "not_gated": borrowed,  # shard_bands measures judged by no band of the shard's language
    }
