"""A Japanese font for the audit's figures and HTML report, so Japanese text renders as glyphs
(matplotlib's DejaVu Sans and a machine without CJK fonts would draw boxes).

The font is IPAexGothic (IPA Font License v1.0), the file the `japanize-matplotlib` package ships
(a locked dependency). Only the file is read: the package is never imported (importing it restyles
matplotlib globally, and it imports `distutils`). Figures list it after DejaVu Sans, so Latin text
looks as before and matplotlib falls back to it per glyph. An HTML page with Japanese text embeds
the subset of the font its characters need (a few kB, base64 in the page's CSS: the report stays
one self-contained folder that opens from disk); the license allows fonts embedded in a document.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import unicodedata
from functools import cache
from pathlib import Path

FONT_PACKAGE = "japanize_matplotlib"
FONT_FILE = "fonts/ipaexg.ttf"
FONT_FAMILY = "IPAexGothic"
_CJK = ("HIRAGANA", "KATAKANA", "CJK", "FULLWIDTH", "HALFWIDTH", "IDEOGRAPHIC")


class FontMissing(RuntimeError):
    """The Japanese font is not installed (the locked `japanize-matplotlib` package is missing)."""


def font_path() -> Path:
    """The Japanese font file, found without importing its package."""
    spec = importlib.util.find_spec(FONT_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / FONT_FILE
        if path.is_file():
            return path
    raise FontMissing(
        f"no {FONT_FILE} of the {FONT_PACKAGE!r} package: Japanese text would render as boxes "
        "(install the locked environment: scripts/setup.sh)"
    )


def cjk_chars(text: str) -> str:
    """The characters of `text` that need the Japanese font (kana, kanji, full-width forms), sorted, once each."""
    return "".join(sorted({c for c in text if unicodedata.name(c, "").startswith(_CJK)}))


@cache
def use_in_matplotlib() -> str:
    """Register the font with matplotlib and list it after the default family, so a glyph the
    default (DejaVu Sans) lacks is drawn with it (matplotlib falls back along `font.family`, one
    font per entry). Process-wide, as matplotlib's fonts are. Returns its family name."""
    from matplotlib import font_manager, rcParams  # lazy: only figures need matplotlib

    font_manager.fontManager.addfont(str(font_path()))
    families = list(rcParams["font.family"])
    if FONT_FAMILY not in families:
        rcParams["font.family"] = [*families, FONT_FAMILY]
    return FONT_FAMILY


def font_face_css(text: str) -> str:
    """A CSS @font-face rule embedding the subset of the font that `text`'s Japanese characters
    need ("" when it has none); pages list `FONT_FAMILY` last in their font-family."""
    chars = cjk_chars(text)
    if not chars:
        return ""
    from fontTools import subset  # lazy: matplotlib's own dependency; only Japanese pages need it

    options = subset.Options()
    options.flavor = None  # plain TrueType: WOFF2 would need brotli
    options.name_IDs = [0, 1, 2, 3, 4, 5, 6, 13, 14]  # names, copyright, and the license and its URL
    options.hinting, options.layout_features = False, []  # screen text at report sizes; ~2x faster
    font = subset.load_font(str(font_path()), options, lazy=True)
    sub = subset.Subsetter(options)
    sub.populate(text=chars)
    sub.subset(font)
    buf = io.BytesIO()
    subset.save_font(font, buf, options)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"@font-face{{font-family:'{FONT_FAMILY}';src:url(data:font/ttf;base64,{data}) format('truetype')}}"
