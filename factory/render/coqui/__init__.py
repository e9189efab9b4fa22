"""Coqui TTS backend (coqui-tts 0.28, GPU production path; also runs on CPU).

Two kinds of voice (`voices/gpu/coqui.yaml` documents both):

* Multi-speaker VITS: `voice.model` is a local folder holding a checkpoint (`model.pth`,
  `model_file.pth`, `checkpoint.pth` or `best_model*.pth`) and `config.json` (plus the speakers
  file, e.g. `speaker_ids.json`), or a Coqui model name such as `tts_models/en/vctk/vits`
  that was downloaded beforehand; `voice.speaker` is the speaker name inside the model
  (e.g. `p225`). Word times come from the model's own durations: VITS predicts frames per
  input token (`outputs["durations"]` of `Vits.inference`), the tokens are decoded back to
  characters/phonemes, and the runs between space tokens are mapped onto the text's
  whitespace tokens with `factory.render.text.map_spans`.
* XTTS-v2 cloning: `voice.model` is an XTTS folder (`model.pth`, `config.json`, `vocab.json`,
  optionally `speakers_xtts.pth`) or `tts_models/multilingual/multi-dataset/xtts_v2`;
  `voice.reference` is the reference clip (a few seconds of clean speech), or `voice.speaker`
  one of the model's built-in speakers. XTTS generates audio autoregressively and has no
  durations, so word times come from forced alignment after synthesis
  (`factory.render.align.align_words`); without it the call fails with a TTSError that says so.

The package: `models` (where a voice's model is, loading it), `vits`, `xtts`, and `backend`
(the `CoquiBackend` that dispatches to them). Its cache identity hashes all of it.

Models are loaded through Coqui's own API (`TTS.api.TTS(model_path=..., config_path=...)`),
moved to the device once (`.to(device)`: cuda when available, else cpu), and cached per
(model, device) for the life of the backend. Nothing is downloaded at run time unless
`COQUI_ALLOW_DOWNLOAD=1` is set (production machines may be offline): a model name must be in
Coqui's cache (`tts --model_name NAME --list_models` fills it; XTTS-v2 comes from the
Hugging Face hub, repo `tts-hub/XTTS-v2`, formerly `coqui/XTTS-v2`).

Determinism: VITS draws its noise (duration predictor and prior) per item from generators
seeded by (text, voice, rate, params), on the CPU, so the same input gives the same durations
and the same audio on the same device, whatever batch it was rendered in.

Batching (`synthesize_many(requests)`, the protocol's batch call): VITS requests of one model
(any speakers, rates, languages) run the text encoder and duration predictor per item, then the
flow and the HiFi-GAN decoder -- the T_dec-length work that dominates -- as padded batches of
`batch_size` sorted by length, with every decoder conv's input masked to each item's length so
no padding leaks into a shorter item (`vits.render_batch`). Default batch 16 on CUDA, 1 on CPU,
where padding costs more than batching saves. `batch_stats` counts the fill. XTTS has no
batched inference in Coqui: it renders one by one, computing the conditioning latents of each
reference clip once per backend (cached) and reusing them. The CUDA path is written against
Coqui's real API and tested on CPU only here (no GPU on the development machine).
"""

from factory.render.coqui.backend import CoquiBackend
from factory.render.coqui.models import INSTALL_HINT, XTTS_V2, XTTS_V2_LANGUAGES

__all__ = ["INSTALL_HINT", "XTTS_V2", "XTTS_V2_LANGUAGES", "CoquiBackend"]
