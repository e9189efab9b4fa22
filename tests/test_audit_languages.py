"""The audit per language: each sample judged by its own language's bands (a Japanese value outside
the English band but inside the Japanese one passes for a Japanese sample and fails for an English
one), bands borrowed from English labelled "English band" in every output, a language's reference
measured otherwise (the Japanese overlap share) shown and not gated, a mixed run pooled per
language, and Japanese text drawn with a Japanese font in the figures and the HTML report.

Built from constructed rows and a small run of synthetic samples (tests/export_fixtures.py): no
generate run, no ASR."""

from __future__ import annotations

import warnings
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from factory.audit.cli import measures_table, shards_table
from factory.audit.fonts import FONT_FAMILY, cjk_chars, font_path
from factory.audit.gates import pool, shard_report
from factory.audit.report import headline_rows, update_card, write_report
from factory.audit.run import audit_run, worst
from factory.config import ConfigError, load_config
from factory.conversation.bands import BANDS, HEADLINE, bands_for, headline
from tests.export_fixtures import make_japanese_sample, make_run, make_sample
from tests.test_audit_report import CHROMIUM, DevTools

JA_FTO = [-0.2, -0.1, 0.0, 0.0, 0.05, 0.1, 0.2]  # mean +7.9 ms, median 0: Japanese timing (Stivers 2009)


def _row(fto: list[float], language: str | None) -> dict:
    speech, both = 60.0, 2.4  # overlap share 4 %: inside the English band, so only the FTO can fail
    row = {
        "id": f"{language}-x",
        "duration_s": 60.0,
        "energy_fto": fto,
        "energy_gaps": [x for x in fto if x > 0],
        "energy_between_overlaps": [-x for x in fto if x < 0],
        "energy_both_s": both,
        "energy_speech_s": speech,
        "flags": [],
    }
    if language is not None:
        row["language"] = language
    return row


def test_bands_per_language_replace_english_measure_by_measure() -> None:
    en, ja = bands_for("en"), bands_for("ja-JP")
    assert en == {m: b for m, b in BANDS.items()} and headline("en") == HEADLINE  # English as it was
    assert not any(b.borrowed for b in en.values())
    assert ja["fto_mean_s"].language == "ja" and not ja["fto_mean_s"].borrowed
    assert ja["fto_mean_s"].contains(0.007) and "+7 ms" in ja["fto_mean_s"].source
    assert ja["fto_p50_s"].borrowed and ja["fto_p50_s"].tag == "English band"
    assert ja["fto_p50_s"].shown() == "[0.05, 0.25] (English band)"
    assert not ja["planned_found"].borrowed  # quality promises hold for every language
    # Japanese overlap: its own figure (CALLHOME Japanese), measured on transcript spans: a reference, not a gate
    overlap = ja["overlap_share"]
    assert overlap.language == "ja" and not overlap.borrowed and not overlap.gated and overlap.not_gated
    assert overlap.shown() == "[0.188, inf] (reference, not gated)" and "CALLHOME Japanese" in overlap.source
    assert not overlap.contains(0.118) and overlap.contains(0.2)
    assert en["overlap_share"].gated and not en["overlap_share"].not_gated and en["overlap_share"].tag == ""
    assert ja["asr_wer"].metric == "CER" and ja["asr_wer"].shown() == "[0, 0.3] (CER)"
    assert "fto_mean_s" in headline("ja") and "fto_mean_s" not in en
    # a config may gate a measure that only some language has a band for, not an unknown one
    assert "fto_mean_s" in load_config(overrides=["audit.shard_bands=[fto_mean_s]"]).audit.shard_bands
    with pytest.raises(ConfigError, match="unknown measure"):
        load_config(overrides=["audit.shard_bands=[fto_mode_s]"])


def test_japanese_timing_passes_for_japanese_and_fails_for_english() -> None:
    gates = load_config(overrides=["audit.shard_bands=[fto_p50_s, fto_mean_s, overlap_share]"]).audit
    ja = shard_report([_row(JA_FTO, "ja")], gates, "energy")
    assert ja["problems"] == []
    # its 4 % overlap share is under the Japanese reference (>= 18.8 %), which reports and does not gate
    assert ja["not_gated"] == ["ja: fto_p50_s (English band)", "ja: overlap_share (reference, not gated)"]
    for language in ("en", None):  # a row without a language (an older audit) is English
        en = shard_report([_row(JA_FTO, language)], gates, "energy")
        assert en["problems"] == ["fto_p50_s 0.000 outside [0.05, 0.25]"] and en["not_gated"] == []
    # a mixed shard: each language pooled and judged apart, problems named by language
    mixed = shard_report([_row(JA_FTO, "ja"), _row(JA_FTO, "en")], gates, "energy")
    assert mixed["problems"] == ["en: fto_p50_s 0.000 outside [0.05, 0.25]"]
    assert set(mixed["languages"]) == {"en", "ja"}
    assert pool([_row(JA_FTO, "ja")], "energy")["fto_mean_s"] == pytest.approx(0.05 / 7 + 0.0, abs=1e-9)
    # the worst samples are judged against their own language's band
    frame = pl.DataFrame({"id": ["j", "e"], "language": ["ja", "en"], "fto_mean_s": [0.3, 0.0]})
    assert worst(frame, "fto_mean_s", 5) == ["j"]  # English has no mean band: its sample is not ranked


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory):
    """Two Japanese and two English synthetic samples in one run, audited with the energy VAD."""
    run = make_run(
        tmp_path_factory.mktemp("mixed") / "run",
        [make_japanese_sample(0), make_sample(0), make_japanese_sample(1), make_sample(1)],
    )
    return audit_run(run, vads=("energy",), asr_turns=0)


def test_mixed_run_is_pooled_and_labelled_per_language(mixed_run, tmp_path: Path) -> None:
    result = mixed_run
    assert result.languages == ["en", "ja"]
    assert sorted(r["language"] for r in result.rows) == ["en", "en", "ja", "ja"]
    assert result.by_language["ja"]["energy"]["n_samples"] == 2 == result.by_language["en"]["energy"]["n_samples"]
    console = Console(record=True, width=220)
    console.print(measures_table(result, "en"))
    english = console.export_text()
    console.print(measures_table(result, "ja"))
    console.print(shards_table(result))
    japanese = console.export_text()  # what was printed since the English table
    console.print(measures_table(result))  # the run's: one table per language
    assert console.export_text().count("dialogues audited") == 2
    assert "English band" not in english and "fto_mean_s" not in english
    assert "[0.05, 0.25] (English band)" in japanese and "fto_mean_s" in japanese and "(CER)" in japanese
    assert "bands for ja" in japanese
    rows = headline_rows(result)  # the card's rows: every language's, prefixed
    assert "ja: fto_p50_s" in [r[0] for r in rows] and any("(English band)" in r[2] for r in rows)
    assert not any("(English band)" in r[2] for r in rows if r[0].startswith("en: "))
    run = Path(result.run_dir)  # the card: written once the run has its manifest
    pl.concat([pl.read_parquet(p) for p in sorted((run / "manifests").glob("*.parquet"))]).write_parquet(
        run / "manifest.parquet"
    )
    card = update_card(result)
    assert card is not None
    text = card.read_text()
    assert "| ja: fto_p50_s |" in text and "[0.05, 0.25] (English band)" in text and "Languages: en, ja" in text


@pytest.fixture(scope="module")
def mixed_report(mixed_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mixed run's HTML report, a page for every sample."""
    return write_report(mixed_run, tmp_path_factory.mktemp("report") / "html", players=4)


def test_html_report_labels_borrowed_bands_and_embeds_a_japanese_font(mixed_report: Path) -> None:
    index = mixed_report.read_text()
    assert "(English band)" in index and "distributions-ja.png" in index and "distributions-en.png" in index
    pages = {p.name: p.read_text() for p in (mixed_report.parent / "samples").glob("*.html")}
    ja_page = pages["ja000.html"]
    assert "市役所" in ja_page and "<html lang=ja>" in ja_page  # the transcript, in Japanese
    assert f"@font-face{{font-family:'{FONT_FAMILY}'" in ja_page and "base64," in ja_page
    assert "@font-face" not in pages["d000.html"]  # an English page carries no font


def test_matplotlib_draws_japanese_with_the_font(tmp_path: Path) -> None:
    from fontTools.ttLib import TTFont

    from factory.audit.figures import _plt, save_png

    plt = _plt()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig, ax = plt.subplots(figsize=(3, 1))
        ax.set_title("すみません、市役所までの行き方")
        save_png(fig, tmp_path / "ja.png")
    assert not [w for w in caught if "missing from font" in str(w.message)], [str(w.message) for w in caught]
    cmap = TTFont(font_path(), lazy=True).getBestCmap()
    assert cmap is not None and all(ord(c) in cmap for c in cjk_chars("すみません、市役所までの行き方"))


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium missing: run scripts/setup.sh")
def test_japanese_page_renders_with_the_font_in_chromium(mixed_report: Path, tmp_path: Path) -> None:
    """Chromium has no Japanese system font here: the page's glyphs come from the embedded subset."""
    page = mixed_report.parent / "samples" / "ja000.html"
    browser = DevTools(tmp_path / "profile")
    try:
        browser.open(page.as_uri())
        faces = browser.evaluate(
            "document.fonts.ready.then(() => Array.from(document.fonts).map(f => [f.family, f.status]))"
        )
        assert [f"'{FONT_FAMILY}'", "loaded"] in faces or [FONT_FAMILY, "loaded"] in faces, faces
        assert browser.evaluate(f"document.fonts.check(\"16px '{FONT_FAMILY}'\", '市役所')")
        assert not browser.errors()
    finally:
        browser.close()


def test_asr_round_trip_hears_and_scores_in_the_dialogue_language(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whisper is told the dialogue's language and a Japanese turn is scored by characters (CER),
    as the render stage's QA scores it. Whisper's answer is fixed here: the test is of the wiring."""
    import factory.audit.measures as measures
    from factory.asr import Transcript, cer, wer
    from factory.audit.measures import audit_sample

    asked = []

    def transcribe(clip, sr, language="en", **_):
        asked.append(language)
        return Transcript(text="すみません、市役所", words=[], language=language, duration=len(clip) / sr)

    monkeypatch.setattr(measures, "transcribe", transcribe)
    sample = make_japanese_sample(0)
    turns = [  # every turn the round trip may draw: asked for all, it checks each in order
        t
        for t in sample.timeline.turns
        if t.kind.value == "turn" and t.end_reason.value != "yielded" and not measures.is_exempt(t.spoken_text, "ja")
    ]
    row = audit_sample(sample, vads=("energy",), asr_turns=len(turns)).row
    assert row["asr_metric"] == "CER" and asked == ["ja"] * len(turns) and len(turns) >= 3
    assert row["asr_wers"] == pytest.approx([cer(t.spoken_text, "すみません、市役所") for t in turns])
    assert row["asr_wers"] != pytest.approx([wer(t.spoken_text, "すみません、市役所") for t in turns])


JA_RUN = [  # two dialogues through the Japanese CPU route (README: a dataset source), Kokoro's ja voices
    "run.seed=7",
    "run.n_samples=2",
    "dialogue.language=ja",
    "tts.qa_wer_threshold=null",  # no Whisper QA: the report's page, not the renders, is tested here
    "run.processes=1",
    "tts.processes=1",
]
JA_TURNS = 2  # each dialogue's first turns only: Kokoro renders ~1.5 CPU-s a second of speech on CPU


@pytest.fixture(scope="module")
def ja_cli_report(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> Path:
    """A real Japanese run (`duplex-factory generate`: the packaged ja-everyday set's first two
    dialogues, cut to their first turns, rendered by Kokoro's Japanese voices) and the command
    `duplex-factory audit RUN --html OUT` on it: the report's folder."""
    import json

    from typer.testing import CliRunner

    from factory.cli import app
    from factory.locations import dialogue_set_dir

    out = tmp_path_factory.mktemp("ja-run")
    lines = (dialogue_set_dir() / "ja-everyday.jsonl").read_text(encoding="utf-8").splitlines()
    short = [json.loads(line) for line in lines if line.strip()][:2]
    for d in short:
        d["turns"] = d["turns"][:JA_TURNS]
    source = out / "ja-short.jsonl"
    source.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in short), encoding="utf-8")
    args = ["generate", "--out", str(out), "--run-id", "ja"]
    for item in [*JA_RUN, f"dialogue.sources=[{{kind: dataset, path: {source}}}]"]:
        args += ["--set", item]
    generated = CliRunner().invoke(app, args)
    assert generated.exit_code == 0, generated.output + repr(generated.exception)
    html = out / "html"
    audit = ["audit", str(out / "ja"), "--asr-turns", "0", "--players", "2", "--html", str(html)]
    audited = CliRunner().invoke(app, audit)
    assert audited.exit_code == 0, audited.output + repr(audited.exception)
    return html


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium missing: run scripts/setup.sh")
def test_audit_html_of_a_japanese_run_draws_its_text_with_the_embedded_font(
    ja_cli_report: Path, tmp_path: Path
) -> None:
    """Every sample page of the real run's report, opened in headless Chromium: the transcript's
    Japanese characters are drawn by the embedded font (the fonts Chromium used for the text nodes,
    DevTools' CSS.getPlatformFontsForNode), not by a fallback's boxes, and that font has a glyph for
    every Japanese character on the page."""
    import base64
    import io
    import re

    from fontTools.ttLib import TTFont

    pages = sorted((ja_cli_report / "samples").glob("*.html"))
    assert len(pages) == 2
    browser = DevTools(tmp_path / "profile")
    try:
        browser.call("DOM.enable")
        browser.call("CSS.enable")
        for page in pages:
            html = page.read_text()
            assert "<html lang=ja>" in html
            browser.open(page.as_uri())
            text = browser.evaluate("document.fonts.ready.then(() => document.body.innerText)")
            chars = cjk_chars(text)
            assert len(chars) > 10, text[:300]  # the dialogue's own Japanese text, as written
            embedded = re.search(r"base64,([A-Za-z0-9+/=]+)\)", html)
            assert embedded, f"{page.name}: no embedded font"
            cmap = TTFont(io.BytesIO(base64.b64decode(embedded.group(1)))).getBestCmap()
            assert [c for c in chars if ord(c) not in cmap] == []
            # mark each element whose own text is Japanese, then ask which fonts drew those text nodes
            # (and count their kana and kanji)
            n = browser.evaluate(
                "(() => { let n = 0; for (const el of document.body.querySelectorAll('*')) {"
                " const own = [...el.childNodes].filter(c => c.nodeType === 3).map(c => c.data).join('');"
                " const ja = own.match(/[\\u3040-\\u30ff\\u4e00-\\u9fff]/g);"
                " if (ja) { el.setAttribute('data-ja', ''); n += ja.length; } } return n; })()"
            )
            assert n > 10
            root = browser.call("DOM.getDocument", depth=-1)["root"]["nodeId"]
            nodes = browser.call("DOM.querySelectorAll", nodeId=root, selector="[data-ja]")["nodeIds"]
            used: dict[str, int] = {}
            for node in nodes:
                for f in browser.call("CSS.getPlatformFontsForNode", nodeId=node)["fonts"]:
                    if f["isCustomFont"] or f["familyName"] == FONT_FAMILY:
                        used["embedded"] = used.get("embedded", 0) + f["glyphCount"]
                    else:
                        used[f["familyName"]] = used.get(f["familyName"], 0) + f["glyphCount"]
            assert used.get("embedded", 0) >= n, (page.name, n, used)
        assert not browser.errors()
    finally:
        browser.close()
