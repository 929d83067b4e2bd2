"""deploy/kubernetes (docs/deployment.md): every manifest valid against the Kubernetes schemas (kubernetes-validate,
offline, strict: no unknown fields), `kubectl kustomize` builds them where kubectl is installed, and the parts fit
together and with neoxserve: the settings file loads, probes and ports are neoxserve's, the grace period covers the
drain, the Service, the PodDisruptionBudget and the autoscaler reach the Deployment."""
from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from neoxserve.config import Settings

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33.0"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _resources() -> list[dict]:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]
    return docs


def _by_kind(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_every_manifest_is_valid_against_the_kubernetes_schemas():
    try:
        import kubernetes_validate
    except ImportError:
        if IN_CI:
            raise
        pytest.skip("kubernetes-validate is not installed (the test extra has it)")
    docs = _resources()
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "Secret", "ConfigMap", "StatefulSet",
                                         "PodDisruptionBudget", "HorizontalPodAutoscaler", "PersistentVolumeClaim"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)   # raises on any error
    # and it does raise: a misspelt field of the Deployment's probe
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 5
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_builds_them():
    out = subprocess.run(["kubectl", "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    built = _by_kind([d for d in yaml.safe_load_all(out.stdout) if d])
    assert set(built) == set(_by_kind(_resources()))
    deployment = built[("Deployment", "neoxserve")]
    assert deployment["metadata"]["labels"]["app.kubernetes.io/part-of"] == "neoxserve"
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].startswith("registry.example.com/")


def test_the_parts_fit_together_and_with_neoxserve(tmp_path):
    docs = _by_kind(_resources())
    config = docs[("ConfigMap", "neoxserve-config")]["data"]["neoxserve.toml"]
    (tmp_path / "neoxserve.toml").write_text(config)
    settings = Settings.load(str(tmp_path / "neoxserve.toml"))         # every key is a setting (extra=forbid)
    assert settings.engine_failure_action == "exit" and settings.store_url.startswith("redis://neoxserve-redis:")
    assert tomllib.loads(config)["port"] == 8360

    deployment = docs[("Deployment", "neoxserve")]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["ports"][0]["containerPort"] == settings.port
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"   # an engine restart must not kill the pod
    assert container["startupProbe"]["httpGet"]["path"] == "/ready"
    # the grace period holds the preStop wait and then the longest stream's end
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + 60
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # the store's key and the console's admin key, both from the Secret, under the settings' variable names
    secret_refs = {e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                   for e in container["env"] if "valueFrom" in e}
    assert secret_refs == {"NEOXSERVE_SECRET_KEY": ("neoxserve-secrets", "secret-key"),
                           "NEOXSERVE_ADMIN_KEY": ("neoxserve-secrets", "admin-key")}
    secret = docs[("Secret", "neoxserve-secrets")]["stringData"]
    assert set(secret) == {"secret-key", "admin-key"}
    env = {name.removeprefix("NEOXSERVE_").lower(): secret[key] for name, (_, key) in secret_refs.items()}
    assert Settings.load(str(tmp_path / "neoxserve.toml"), **env).admin_key == secret["admin-key"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"neoxserve-models"} and ("PersistentVolumeClaim", "neoxserve-models") in docs
    assert settings.model.startswith("/models/")

    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for kind in ("Service", "PodDisruptionBudget"):
        selector = docs[(kind, "neoxserve")]["spec"]["selector"]
        assert (selector.get("matchLabels") or selector).items() <= labels.items(), kind
    hpa = docs[("HorizontalPodAutoscaler", "neoxserve")]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "neoxserve"}
    assert hpa["minReplicas"] > docs[("PodDisruptionBudget", "neoxserve")]["spec"]["minAvailable"]
    redis = docs[("Service", "neoxserve-redis")]
    assert f"{redis['metadata']['name']}:{redis['spec']['ports'][0]['port']}" in settings.store_url
