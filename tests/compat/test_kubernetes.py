"""The Kubernetes manifests: every overlay renders with `kubectl kustomize`, passes
`kubernetes-validate --strict` at a current Kubernetes version (KEDA's ScaledObject, a custom
resource it has no schema for, against our schema of KEDA's documented fields), and holds
what the nodes rely on: ordered pods, a preStop hook that decommissions on a scale-in and
hands off on a restart within the grace period, a minimal Role for it, probes on the
node's endpoints, and autoscaling that scales in slowly."""

import json
import pathlib
import shutil
import subprocess
import sys

import jsonschema
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
OVERLAYS = ["dev", "production", "autoscaling", "keda"]
# The current Kubernetes release (requirements.txt asks for a kubernetes-validate that
# has its schemas).
KUBERNETES_VERSION = "1.37.0"


def render(overlay):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: it renders the manifests (kubectl kustomize)")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def docs(overlay):
    return [d for d in yaml.safe_load_all(render(overlay)) if d]


def one(ds, kind):
    found = [d for d in ds if d["kind"] == kind]
    assert len(found) == 1, f"{kind}: {len(found)}"
    return found[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renders_and_validates_strictly(overlay, tmp_path):
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(render(overlay))
    validate = pathlib.Path(sys.executable).parent / "kubernetes-validate"
    out = subprocess.run(
        [str(validate), "--strict", "-k", KUBERNETES_VERSION, str(rendered)],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # Every document was checked against a schema: kinds without one are custom resources
    # that we check ourselves below.
    unknown = [l for l in out.stdout.splitlines() if "Couldn't find schema" in l]
    kinds = {d["kind"] for d in docs(overlay)}
    if overlay == "keda":
        assert len(unknown) == 1 and "ScaledObject" in unknown[0], out.stdout
        schema = json.loads((K8S / "schemas" / "keda-scaledobject.json").read_text())
        jsonschema.validate(one(docs(overlay), "ScaledObject"), schema)
    else:
        assert unknown == [], out.stdout
    assert {"StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds


def test_the_keda_schema_rejects_a_misspelt_field():
    schema = json.loads((K8S / "schemas" / "keda-scaledobject.json").read_text())
    so = one(docs("keda"), "ScaledObject")
    so["spec"]["triggers"][1]["metadata"]["desiredReplica"] = "5"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(so, schema)


def test_the_statefulset_is_what_the_nodes_rely_on():
    ds = docs("production")
    sts = one(ds, "StatefulSet")
    spec = sts["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "OrderedReady"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain", "whenScaled": "Delete"}
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    # The preStop hook, and a grace period longer than the longest it waits.
    cmd = c["lifecycle"]["preStop"]["exec"]["command"]
    assert cmd[:5] == ["/trellisctl", "nodes", "leave", "--self", "--if-beyond-replicas"]
    wait = int(next(a for a in cmd if a.startswith("--wait-seconds=")).split("=")[1])
    assert pod["terminationGracePeriodSeconds"] >= wait + 20
    # Probes on the node's endpoints.
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    # The zone from the downward API, as --zone.
    env = {e["name"]: e for e in c["env"]}
    assert "topology.kubernetes.io/zone" in env["ZONE"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert "--zone=$(ZONE)" in c["args"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["affinity"]["podAntiAffinity"] and pod["topologySpreadConstraints"]
    assert spec["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    # The config comes from the generated ConfigMap, mounted where --config reads it.
    cm = one(ds, "ConfigMap")
    assert "trellis.toml" in cm["data"]
    vol = next(v for v in pod["volumes"] if v["name"] == "config")
    assert vol["configMap"]["name"] == cm["metadata"]["name"]
    assert "--config=/etc/trellis/trellis.toml" in c["args"]
    # The preStop hook's Role reads this StatefulSet and nothing else.
    role = next(d for d in ds if d["kind"] == "Role")
    assert role["rules"] == [{"apiGroups": ["apps"], "resources": ["statefulsets"],
                              "resourceNames": ["trellis"], "verbs": ["get"]}]
    assert pod["serviceAccountName"] == "trellis"
    assert one(ds, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_dev_is_one_node():
    assert one(docs("dev"), "StatefulSet")["spec"]["replicas"] == 1


def test_autoscaling_scales_in_one_pod_at_a_time_and_owns_the_count():
    ds = docs("autoscaling")
    assert "replicas" not in one(ds, "StatefulSet")["spec"]
    hpa = one(ds, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] == 3
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    down = hpa["spec"]["behavior"]["scaleDown"]["policies"]
    assert down == [{"type": "Pods", "value": 1, "periodSeconds": 600}]
    jobs = [d for d in ds if d["kind"] == "CronJob"]
    floors = sorted(
        json.loads(next(a for a in j["spec"]["jobTemplate"]["spec"]["template"]["spec"]
                        ["containers"][0]["command"] if a.startswith("--patch="))[8:])
        ["spec"]["minReplicas"] for j in jobs)
    assert floors == [3, 5]
    role = next(d for d in ds if d["kind"] == "Role" and d["metadata"]["name"] == "trellis-scaler")
    assert role["rules"][0]["resources"] == ["horizontalpodautoscalers"]
    assert role["rules"][0]["verbs"] == ["get", "patch"]
    for j in jobs:
        assert j["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"] == "trellis-scaler"


def test_keda_owns_the_count_with_cron_and_cpu():
    ds = docs("keda")
    assert "replicas" not in one(ds, "StatefulSet")["spec"]
    assert not [d for d in ds if d["kind"] == "HorizontalPodAutoscaler"]
    so = one(ds, "ScaledObject")
    assert {t["type"] for t in so["spec"]["triggers"]} == {"cpu", "cron"}
    assert so["spec"]["minReplicaCount"] == 3
