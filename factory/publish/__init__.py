"""Publishing finished runs: the Hugging Face Hub (`hub.push_run`)."""
