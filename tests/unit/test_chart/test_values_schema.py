"""values.schema.json refuses unknown keys at every level and documents exactly what values.yaml sets."""

import json
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

CHART = Path(__file__).resolve().parents[3] / "charts/kuberag"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def _objects(schema: dict, path: str = ""):
    if schema.get("type") == "object":
        yield path or "(root)", schema
    for key, prop in schema.get("properties", {}).items():
        yield from _objects(prop, f"{path}.{key}" if path else key)
    if isinstance(schema.get("items"), dict):
        yield from _objects(schema["items"], f"{path}[]")


def test_every_object_refuses_unknown_keys():
    for path, schema in _objects(SCHEMA):
        extra = schema.get("additionalProperties")
        if "properties" in schema:
            assert extra is False, f"{path} must set additionalProperties: false"
        else:
            # A map (labels, annotations, resources): its values are typed; or a Kubernetes type passed through.
            assert isinstance(extra, dict) or "Kubernetes type" in schema.get("$comment", ""), path


def _leaves(schema: dict, values: dict, path: str = ""):
    for key, prop in schema["properties"].items():
        assert key in values, f"values.yaml lacks {path}{key}"
        if prop.get("type") == "object" and "properties" in prop:
            yield from _leaves(prop, values[key], f"{path}{key}.")
        else:
            yield f"{path}{key}", prop, values[key]
    assert set(values) == set(schema["properties"]), f"{path}: values.yaml keys the schema does not declare"


def test_values_yaml_is_what_the_schema_documents():
    leaves = list(_leaves(SCHEMA, VALUES))
    assert len(leaves) > 30
    for path, prop, value in leaves:
        assert prop.get("description"), f"{path} has no description (the README table is generated from them)"
        assert prop.get("default") == value, f"{path}: values.yaml has {value!r}, the schema documents {prop.get('default')!r}"


def test_thresholds_match_the_rules_defaults():
    from dashboards.rules import DEFAULTS

    rule = VALUES["prometheusRule"]
    assert str(rule["errorRatio"]) == DEFAULTS.error_ratio
    assert str(rule["latencySLO"]["objective"]) == DEFAULTS.slo_objective
    assert rule["latencySLO"]["thresholdSeconds"] == DEFAULTS.slo_threshold_seconds
    assert str(rule["cacheHitRatioCollapse"]["factor"]) == DEFAULTS.collapse_factor
    assert str(rule["cacheHitRatioCollapse"]["minQueriesPerSecond"]) == DEFAULTS.collapse_min_qps
    assert str(rule["rateLimitedRatio"]) == DEFAULTS.rate_limited_ratio


def test_slo_bounds_are_histogram_buckets():
    from kuberag_api.metrics import LATENCY_BUCKETS

    allowed = SCHEMA["properties"]["prometheusRule"]["properties"]["latencySLO"]["properties"]["thresholdSeconds"]["enum"]
    # prometheus_client writes the le label as Go's float formatting does (0.25, 1.0, 10.0).
    assert set(allowed) <= {repr(float(b)) for b in LATENCY_BUCKETS}
