"""The CRD has one source (kuberag_operator.crd); its YAML copy and defaults must agree with it."""

from pathlib import Path

import pytest
import yaml
from kuberag_contract.config import ApiConfig
from kuberag_operator import crd
from kuberag_operator.children import api_config

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
CRD_FILE = ROOT / "manifests/crd/bases/kuberag.io_ragservices.yaml"


def test_generated_crd_file_matches_its_source():
    assert CRD_FILE.read_text() == crd.render_yaml(), "run `make manifests`: the CRD YAML drifted from crd.py"


def test_crd_names_subresources_and_columns():
    doc = crd.custom_resource_definition()
    spec = doc["spec"]
    assert doc["metadata"]["name"] == "ragservices.kuberag.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == ["rag"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector"}
    assert "status" in version["subresources"]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Replicas", "Ready", "Endpoint", "Available", "Indexed", "Age"]


def _rules(schema: dict) -> list[str]:
    found = [r["message"] for r in schema.get("x-kubernetes-validations", [])]
    for prop in schema.get("properties", {}).values():
        found += _rules(prop)
    return found


def test_every_cel_rule_message_names_its_field():
    schema = crd.custom_resource_definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    messages = _rules(schema)
    assert len(messages) >= 8
    for message in messages:
        assert message.startswith(("spec.", "metadata.name")), message


def test_defaulted_empty_spec_renders_the_contract_defaults():
    spec = crd.defaulted_spec({})
    assert spec["replicas"] == 1
    assert spec["image"] == crd.DEFAULT_IMAGE
    assert "autoscaling" not in spec  # absent means fixed replicas
    # Overlapping fields default exactly as the API's own config file does.
    assert api_config(spec, replicas=1) == ApiConfig()


def test_with_defaults_fills_nested_objects_and_keeps_given_values():
    spec = crd.defaulted_spec({"cache": {"l1": {"ttlSeconds": 7}}, "autoscaling": {"maxReplicas": 4}})
    assert spec["cache"]["l1"] == {"ttlSeconds": 7, "maxEntries": 10_000}
    assert "threshold" not in spec["cache"]["l3"]  # unset: the embedding model's calibrated default
    assert spec["cache"]["l3"]["enabled"] is True
    assert spec["autoscaling"] == {"maxReplicas": 4, "minReplicas": 1, "targetCPUUtilizationPercentage": 80}


def test_crd_yaml_is_loadable_and_structural():
    doc = yaml.safe_load(CRD_FILE.read_text())
    schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def walk(s, path="root"):
        # Structural schema: every node has a type unless it is int-or-string or preserve-unknown.
        if not (s.get("x-kubernetes-int-or-string") or "anyOf" in s):
            assert "type" in s, path
        for k, v in s.get("properties", {}).items():
            walk(v, f"{path}.{k}")
        if isinstance(s.get("additionalProperties"), dict):
            walk(s["additionalProperties"], f"{path}[*]")
        if "items" in s:
            walk(s["items"], f"{path}[]")

    walk(schema)
