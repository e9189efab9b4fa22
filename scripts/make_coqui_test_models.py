"""Build randomly initialised Coqui models of the real classes, saved the way a downloaded
model folder looks, for testing the coqui backend without any download.

    .envs/coqui/bin/python scripts/make_coqui_test_models.py OUT_DIR [--speakers 4] [--xtts]

OUT_DIR/vits-ms/   model.pth + config.json + speaker_ids.json: a multi-speaker VITS
                   (`Vits.init_from_config(VitsConfig(text_cleaner="english_cleaners",
                   use_phonemes=False, ...))`, graphemes, so no phonemizer is needed),
                   laid out like Coqui's tts_models/en/vctk/vits download (config's
                   speakers_file points at speaker_ids.json by absolute path, as
                   `ModelManager._update_paths` writes it).
OUT_DIR/xtts/      (with --xtts) model.pth + config.json + vocab.json: XTTS's architecture
                   (`Xtts.init_from_config(XttsConfig(...))`) with a small GPT and a
                   character-level BPE vocab.json built with `tokenizers` (the real vocab
                   ships only with the weights), laid out like the tts-hub/XTTS-v2 folder.
                   Weights are random, so its GPT never emits the stop token: audio is noise
                   of max length.

Random weights give noise-like audio; that is enough to test the API path, shapes, speaker
selection, the word-timing contract and the errors.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SPEAKERS = ("p225", "p226", "p227", "p228")


# A smaller VITS of the same class (same layers, fewer channels): ~10x faster on a busy
# 2-core CPU, for the tests. The default size is Coqui's VITS (83M parameters, ~330 MB).
SMALL_VITS = {
    "hidden_channels": 96,
    "hidden_channels_ffn_text_encoder": 256,
    "num_layers_text_encoder": 2,
    "num_layers_posterior_encoder": 4,
    "upsample_initial_channel_decoder": 128,
    "speaker_embedding_channels": 64,
}


def build_vits(out: Path, n_speakers: int = 4, seed: int = 0, small: bool = False, phonemes: bool = False) -> Path:
    """`phonemes=True`: IPA input through Coqui's espeak phonemizer (needs espeak-ng), as in
    tts_models/en/vctk/vits; else graphemes with english_cleaners."""
    import torch
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.models.vits import Vits, VitsArgs

    out.mkdir(parents=True, exist_ok=True)
    names = [SPEAKERS[i] if i < len(SPEAKERS) else f"spk{i}" for i in range(n_speakers)]
    speakers_file = out / "speaker_ids.json"
    speakers_file.write_text(json.dumps({n: i for i, n in enumerate(names)}, indent=2))
    torch.manual_seed(seed)
    config = VitsConfig(
        text_cleaner="english_cleaners",
        use_phonemes=phonemes,
        phonemizer="espeak" if phonemes else None,
        phoneme_language="en-us" if phonemes else None,
        add_blank=True,
        use_speaker_embedding=True,
        speakers_file=str(speakers_file.resolve()),
        model_args=VitsArgs(
            use_speaker_embedding=True, speakers_file=str(speakers_file.resolve()), **(SMALL_VITS if small else {})
        ),
    )
    model = Vits(config)  # = Vits.init_from_config(config), deprecated in 0.28
    model.eval()
    torch.save({"model": model.state_dict(), "config": model.config.to_dict()}, out / "model.pth")
    model.config.save_json(str(out / "config.json"))
    return out


def build_xtts_vocab(path: Path) -> None:
    """A character-level BPE vocab in the format VoiceBpeTokenizer reads (tokenizers JSON),
    with XTTS's special tokens and language tags."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from TTS.tts.configs.xtts_config import XttsConfig

    specials = ["[STOP]", "[UNK]", "[SPACE]", "[START]"] + [f"[{lang}]" for lang in XttsConfig().languages]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'\"-:;()")
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tok.add_special_tokens(specials)
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))


def build_xtts(out: Path, seed: int = 0, max_audio_tokens: int = 64) -> Path:
    """A random XTTS. Its GPT does not predict the stop token, so a render generates
    `max_audio_tokens` audio tokens, and the HiFi-GAN decoder's time grows with them."""
    import torch
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts, XttsArgs

    out.mkdir(parents=True, exist_ok=True)
    build_xtts_vocab(out / "vocab.json")
    torch.manual_seed(seed)
    args = XttsArgs(
        gpt_layers=2,
        gpt_n_model_channels=256,
        gpt_n_heads=4,
        gpt_max_audio_tokens=max_audio_tokens,
        gpt_max_text_tokens=402,
        gpt_max_prompt_tokens=70,
        gpt_number_text_tokens=256,
        gpt_num_audio_tokens=1026,
        gpt_start_audio_token=1024,
        gpt_stop_audio_token=1025,
        decoder_input_dim=256,
        tokenizer_file=str((out / "vocab.json").resolve()),
    )
    config = XttsConfig(model_args=args, languages=["en"])
    model = Xtts(config)  # = Xtts.init_from_config(config), deprecated in 0.28
    # as Xtts.load_checkpoint does: tokenizer first, then the models sized from its vocab
    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(out / "vocab.json"))
    model.init_models()
    torch.save({"model": model.state_dict()}, out / "model.pth")
    config.save_json(str(out / "config.json"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--speakers", type=int, default=4)
    ap.add_argument("--small", action="store_true", help="a small VITS (fewer channels), as the tests use")
    ap.add_argument("--phonemes", action="store_true", help="IPA input via espeak-ng (like VCTK VITS)")
    ap.add_argument("--xtts", action="store_true", help="also build the XTTS architecture")
    a = ap.parse_args()
    t = time.perf_counter()
    print(
        "vits:",
        build_vits(a.out / "vits-ms", a.speakers, small=a.small, phonemes=a.phonemes),
        f"{time.perf_counter() - t:.1f} s",
    )
    if a.xtts:
        t = time.perf_counter()
        print("xtts:", build_xtts(a.out / "xtts"), f"{time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
