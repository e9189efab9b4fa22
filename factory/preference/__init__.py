"""Preference pairs for a DPO stage (BayLing-Duplex): the same rendered utterances placed and mixed
twice from a sample's recipe, no TTS call. "chosen": the agent stops within the configured
latency after the user barges in; "rejected": it talks over the interrupter to the end of its
turn, stops too late, or starts answering before the user has finished."""
