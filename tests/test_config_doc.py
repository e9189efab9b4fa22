"""docs/configuration.md is generated from the run config model; it must match what the model
renders now, as schemas/ must (tests/test_schemas.py)."""

from factory.config import RunConfig
from factory.config_doc import DOC_PATH, render


def test_committed_configuration_doc_matches_model() -> None:
    assert DOC_PATH.exists(), f"{DOC_PATH} missing: run `duplex-factory schemas`"
    assert DOC_PATH.read_text() == render(), (
        f"{DOC_PATH.name} drifted from factory/config.py: run `duplex-factory schemas` and commit the result"
    )


def test_every_config_field_is_documented() -> None:
    text = DOC_PATH.read_text()
    for section, field in RunConfig.model_fields.items():
        assert f"## {section}\n" in text
        for name in field.annotation.model_fields:  # type: ignore[union-attr]
            assert f"- `{section}.{name}` (" in text, f"{section}.{name} is not in {DOC_PATH.name}"
