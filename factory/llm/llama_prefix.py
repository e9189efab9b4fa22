"""llama.cpp that reuses a prompt prefix without changing a single logit.

The script stage's prompts share long prefixes: a speaker's system prompt and the dialogue so far
come back turn after turn, and a rejected line is asked again with another seed. Re-evaluating
them is most of the embedded LLM's time (prefill is ~2/3 of a call on one core). llama-cpp-python
can keep the KV cache of the previous prompt, but then a prompt's logits depend on how it was cut
into batches, so on what ran before: the same seed would give different text.

Here every prompt is evaluated in blocks of `BLOCK` tokens at fixed positions (0, BLOCK, 2*BLOCK,
...). The KV cache of a whole block then depends only on the tokens up to its end, so a kept state
truncated to a block boundary holds exactly what a fresh evaluation would compute, and the rest is
evaluated in the same blocks as from scratch. Only the prompt's whole blocks are reused: the
generated tokens were decoded one at a time, by other kernels than a batch, and their KV cache
differs in the last bits from a later prompt's evaluation of the same text (seen: one call in 47
changed its text before this rule); a partial last block had another batch shape, which on this
CPU gives the same bits but is not promised by llama.cpp. The last prompt token is always
evaluated in the call. A few states are kept (least recently used first out), since the two
speakers' prompts alternate.

Imported only with llama-cpp-python (the embedded LLM's optional heavy dependency).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import llama_cpp

BLOCK = 32  # tokens per prompt batch; on one core prefill costs about the same per token at 32 and 512
KEPT_STATES = 4  # the two speakers' prompts plus a retry's; a state is ~10 MB at n_ctx 2048


class PrefixReusingLlama(llama_cpp.Llama):
    """`llama_cpp.Llama` whose prompts reuse block-aligned prefixes of recent calls (see the module
    docstring). Build it with n_batch = n_ubatch = BLOCK; call `keep_state()` after each completion."""

    def __init__(self, *args: Any, kept_states: int = KEPT_STATES, **kwargs: Any) -> None:
        super().__init__(*args, n_batch=BLOCK, n_ubatch=BLOCK, **kwargs)
        self._kept: OrderedDict[tuple[int, ...], llama_cpp.LlamaState] = OrderedDict()
        self._kept_states = kept_states
        self._whole_blocks = 0  # leading KV positions computed in whole prompt blocks
        self.reused_tokens = 0  # prompt tokens not evaluated again, for benchmarks
        self.prompt_tokens = 0

    def generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Iterator[int]:  # type: ignore[override]
        tokens = list(tokens)
        self._start_from_aligned_prefix(tokens)
        yield from super().generate(tokens, *args, **kwargs)

    def _start_from_aligned_prefix(self, tokens: list[int]) -> None:
        # Never the whole prompt: its last token is decoded in this call, in its own block.
        limit = len(tokens) - 1
        exact = min(self.n_tokens, self._whole_blocks)
        live = min(self.longest_token_prefix(self.input_ids[:exact].tolist(), tokens), limit) // BLOCK * BLOCK
        best_key, best = None, live
        for key in self._kept:
            shared = min(self.longest_token_prefix(key, tokens), limit) // BLOCK * BLOCK
            if shared > best:
                best_key, best = key, shared
        if best_key is not None:
            self._kept.move_to_end(best_key)
            seed = self._seed  # load_state restores the kept call's sampling seed: keep this call's
            self.load_state(self._kept[best_key])
            self._seed = seed
        # generate() keeps exactly the first n_tokens of the KV cache when they prefix the prompt
        # (and drops the rest), or starts from nothing when n_tokens is 0.
        self.n_tokens = best
        self._whole_blocks = len(tokens) // BLOCK * BLOCK
        self.reused_tokens += best
        self.prompt_tokens += len(tokens)

    def keep_state(self) -> None:
        """Keep the KV cache of the call that just ended for later prompts that share its prefix."""
        exact = min(self.n_tokens, self._whole_blocks)
        if exact < BLOCK:
            return
        key = tuple(self.input_ids[:exact].tolist())
        self._kept[key] = self.save_state()
        self._kept.move_to_end(key)
        while len(self._kept) > self._kept_states:
            self._kept.popitem(last=False)

    def forget_states(self) -> None:
        """Evaluate the next prompt from scratch (tests compare against this)."""
        self._kept.clear()
        self.n_tokens = 0
        self._whole_blocks = 0
