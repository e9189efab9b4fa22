"""JSON Schemas of every artefact a user or trainer reads, generated from the pydantic models.

`python -m factory.schemas` (or `duplex-factory schemas`) rewrites `schemas/` and
docs/configuration.md (`factory.config_doc`); tests fail when the committed files drift from
the models.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from factory import config_doc
from factory.config import RunConfig
from factory.export.output import Sidecar
from factory.export.report import ExportReport
from factory.models import ManifestRow, MixRecipe, SampleMeta, Scenario, Script, Timeline, Voice
from factory.run.records import FailureRecord, RunSummary, ShardRecord, ShardStats
from factory.script.response import ScriptResponse
from factory.script.source import SourceDialogue
from factory.vap.report import SmokeReport

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

MODELS: dict[str, type[BaseModel]] = {
    "timeline": Timeline,
    "mix_recipe": MixRecipe,
    "sample": SampleMeta,
    "script": Script,
    "scenario": Scenario,
    "manifest_row": ManifestRow,
    "voice": Voice,
    "run_config": RunConfig,
    "export_sidecar": Sidecar,  # export.json beside every token export
    "export_report": ExportReport,  # report.json: counts of every bad-input rule
    "shard_record": ShardRecord,  # shards/<shard>.json of a run
    "failure_record": FailureRecord,  # failures/<shard>.json of a run
    "shard_stats": ShardStats,  # what one shard cost (the run summary pools them)
    "run_summary": RunSummary,  # generate --summary-json
    "llm_script_response": ScriptResponse,  # what the LLM writes in llm.script_mode=structured (guided decoding)
    "dialogue_set": SourceDialogue,  # one line of a dialogue-set JSONL file (dialogues/README.md)
    "smoke_train_report": SmokeReport,  # smoke_train.json of `duplex-factory smoke-train`
}


def render(name: str) -> str:
    schema = MODELS[name].model_json_schema()
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"{name}.schema.json", **schema}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_all(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in MODELS:
        path = directory / f"{name}.schema.json"
        path.write_text(render(name))
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in [*write_all(), config_doc.write()]:
        print(p)
