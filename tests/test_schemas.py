import json

import pytest

from factory.schemas import MODELS, SCHEMA_DIR, render


@pytest.mark.parametrize("name", sorted(MODELS))
def test_committed_schema_matches_model(name: str) -> None:
    path = SCHEMA_DIR / f"{name}.schema.json"
    assert path.exists(), f"{path} missing: run `duplex-factory schemas`"
    assert json.loads(path.read_text()) == json.loads(render(name)), (
        f"{path.name} drifted from factory.models: run `duplex-factory schemas` and commit the result"
    )
