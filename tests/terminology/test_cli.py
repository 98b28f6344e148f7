"""``federation terminology …`` through click's CliRunner."""

from __future__ import annotations

import json

from click.testing import CliRunner
from fhir.resources.R4B.condition import Condition

from federation.terminology.cli import terminology

SEED = "左侧中央型肺鳞癌并纵膈淋巴结转移"


def test_normalize_prints_the_condition_as_fhir_json() -> None:
    result = CliRunner().invoke(terminology, ["normalize", SEED])
    assert result.exit_code == 0, result.output
    assert SEED in result.output                  # ensure_ascii=False
    condition = json.loads(result.output)
    Condition.model_validate(condition)
    assert condition["code"]["coding"][0]["code"] == "C34.9"


def test_normalize_unknown_text_prints_an_uncoded_condition() -> None:
    result = CliRunner().invoke(terminology, ["normalize", "头晕待查", "--subject", "Patient/1"])
    condition = json.loads(result.output)
    assert "coding" not in condition["code"] and condition["subject"]["reference"] == "Patient/1"


def test_translate_prints_parameters() -> None:
    result = CliRunner().invoke(terminology, [
        "translate", "--system", "urn:federation:terminology:CodeSystem/gb-t-2261.2",
        "--code", "30"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["parameter"][0] == {"name": "result", "valueBoolean": True}


def test_translate_with_an_empty_code_fails_with_one_sentence() -> None:
    result = CliRunner().invoke(terminology, ["translate", "--system", "urn:x", "--code", ""])
    assert result.exit_code == 2 and "error:" in result.output
