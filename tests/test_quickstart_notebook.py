"""notebooks/quickstart.ipynb executed headless (nbclient, a real IPython kernel), and the
README's run-reading Python blocks run, both on the session's tiny run.

Cheap by construction: the notebook's parameters (from the environment) point it at a copy of
the tiny run with the tiny run's own settings, so its `generate` cell runs the real command and
flow (config, shard verification by content, finalize, card) and resumes the finished run
instead of making four dialogues again; listening, the plot, the moshi export and `inspect` run
on it as they would for a user."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nbformat
import polars as pl
import pytest
from nbclient import NotebookClient

from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
FENCE = re.compile(r"^```python\n(.*?)^```$", re.M | re.S)


def _outputs(nb, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == kind]


def test_quickstart_notebook_runs(tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / tiny_run.name
    shutil.copytree(tiny_run, run)
    before = {p.relative_to(run): p.read_bytes() for p in sorted((run / "data").glob("*.parquet"))}
    monkeypatch.setenv("DUPLEX_QUICKSTART_OUT", str(tmp_path))
    monkeypatch.setenv("DUPLEX_QUICKSTART_RUN_ID", tiny_run.name)
    monkeypatch.setenv("DUPLEX_QUICKSTART_SET", json.dumps(TINY))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    resources = {"metadata": {"path": str(NOTEBOOK.parent)}}  # the notebook's own folder, as Jupyter starts it
    NotebookClient(nb, timeout=300, kernel_name="python3", resources=resources).execute()

    assert not _outputs(nb, "error")
    rich = _outputs(nb, "display_data") + _outputs(nb, "execute_result")
    text = "".join(o.get("text", "") for o in _outputs(nb, "stream"))
    text += "".join(o.get("data", {}).get("text/plain", "") for o in rich)
    n_ok = pl.read_parquet(run / "manifest.parquet").filter(pl.col("status") == "ok").height
    assert n_ok == 4 and "already complete" in text  # generate ran, and resumed the finished run
    assert before == {p.relative_to(run): p.read_bytes() for p in sorted((run / "data").glob("*.parquet"))}
    audio = [o for o in rich if "<audio" in o.get("data", {}).get("text/html", "")]
    assert len(audio) == 2  # both channels
    assert [o for o in rich if "image/png" in o.get("data", {})]  # the timeline
    lines = (run / "exports" / "moshi" / "train" / "data.jsonl").read_text().splitlines()
    assert len(lines) == n_ok  # one exported dialogue per produced one
    assert re.search(r"moshi train-\d+ @ 12.5 Hz", text)  # inspect's table


def test_readme_python_blocks_run_on_a_run(tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each README Python block, with its run folder pointed at the tiny run, runs as written."""
    blocks = FENCE.findall((ROOT / "README.md").read_text())
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)  # the blocks may write files (the WAV example)
    for block in blocks:
        assert "outputs/demo-seed1234" in block
        exec(compile(block.replace("outputs/demo-seed1234", str(tiny_run)), "README.md", "exec"), {})
    assert sorted(p.name for p in tmp_path.glob("*.wav")) == ["train-0000000-agent.wav", "train-0000000-user.wav"]
