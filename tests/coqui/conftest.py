"""tests/coqui run inside the Coqui environment (torch + coqui-tts), not the torch-free main venv:

    scripts/setup_coqui.sh && .envs/coqui/bin/python -m pytest --confcutdir=tests/coqui tests/coqui

(`--confcutdir` keeps the main suite's tests/conftest.py, which imports the main venv's
stack, out of this run.) In the main venv, where TTS cannot be imported, nothing here is
collected; tests/test_coqui_unavailable.py checks the backend's error there instead.
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("torch") is None or importlib.util.find_spec("TTS") is None:
    collect_ignore_glob = ["test_*.py"]
