"""notebooks/audit.ipynb executed headless (nbclient, a real IPython kernel) on a freshly
generated run (the session's audited copy, its audit measured once); every cell must run without
an error and show what it promises."""

from __future__ import annotations

from pathlib import Path

import nbformat
import polars as pl
import pytest
from nbclient import NotebookClient

from tests.conftest import AUDIT_ASR_TURNS, AuditedRun

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "audit.ipynb"


def _outputs(nb, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == kind]


# Put before the notebook's cells: its `audit_run(RUN, asr_turns=ASR_TURNS)` gets the session's
# audit of the same run with the same arguments (tests/conftest.py `audited_run`), so the run is
# measured once for the audit, report and notebook tests.
REPLAY = """
import pickle
from pathlib import Path

import factory.audit.run

_audited = pickle.loads(Path({pickled!r}).read_bytes())


def _replay(run_dir, **kwargs):
    assert (Path(run_dir), kwargs) == (_audited.run_dir, {{"asr_turns": {asr_turns}}}), (run_dir, kwargs)
    return _audited


factory.audit.run.audit_run = _replay
"""


def test_audit_notebook_runs_on_a_fresh_run(audited_run: AuditedRun, monkeypatch: pytest.MonkeyPatch) -> None:
    run = audited_run.run
    monkeypatch.setenv("DUPLEX_AUDIT_RUN", str(run))
    monkeypatch.setenv("DUPLEX_AUDIT_ASR_TURNS", str(AUDIT_ASR_TURNS))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    replay = REPLAY.format(pickled=str(audited_run.pickled), asr_turns=AUDIT_ASR_TURNS)
    nb.cells.insert(0, nbformat.v4.new_code_cell(replay))
    resources = {"metadata": {"path": str(NOTEBOOK.parent)}}
    NotebookClient(nb, timeout=600, kernel_name="python3", resources=resources).execute()
    assert not _outputs(nb, "error")
    text = "".join(o.get("text", "") for o in _outputs(nb, "stream"))
    n_ok = pl.read_parquet(run / "manifest.parquet").filter(pl.col("status") == "ok").height
    assert f"audited {n_ok} samples from {run}" in text
    assert "problem:" not in text
    assert "barge-in 1 by the" in text and "in the audio" in text  # the chosen sample's barge-ins, found
    rich = [o for o in _outputs(nb, "display_data") + _outputs(nb, "execute_result")]
    images = [o for o in rich if "image/png" in o.get("data", {})]
    audio = [o for o in rich if "<audio" in o.get("data", {}).get("text/html", "")]
    assert len(images) >= 3  # FTO, distributions, the sample's lanes
    assert len(audio) >= 4  # mix, user, agent, and a clip per barge-in
    tables = " ".join(o.get("data", {}).get("text/plain", "") for o in rich) + text
    assert "fto_p50_s" in tables and "transitions_in_overlap" in tables
