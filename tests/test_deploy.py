"""Deployment files: the resources `kubectl apply -k k8s/` applies, the production
settings file they carry, and the image's build context.

kustomization.yaml lists plain files only (no generators, no patches), so what is
applied is exactly those files: each is validated here against the Kubernetes
schemas (strict: unknown fields fail), and everything the StatefulSet refers to must
exist among them - or be the Secret, created out of band (secret.example.yaml shows
it and is deliberately not listed).
"""

from __future__ import annotations

import json
import math
import re
import secrets
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any, cast

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from market_data_store.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).parents[1]
K8S = ROOT / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
OUT_OF_BAND_SECRET = K8S / "secret.example.yaml"
PRODUCTION_TOML = ROOT / "config" / "production.toml"
CONTAINERFILE = ROOT / "Containerfile"
CONTAINERIGNORE = ROOT / ".containerignore"
# The oldest Kubernetes targeted (the preStop `sleep` action is on by default from
# 1.30) and the newest the installed kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# What the process needs after the drain: pool close, telemetry shutdown, exit.
SHUTDOWN_SLACK_SEC = 5
# PostgreSQL's default max_connections (100) less its superuser_reserved_connections (3).
POSTGRES_CONNECTIONS = 97

Resource = dict[str, Any]


def documents(path: Path) -> list[Resource]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    assert all(isinstance(doc, dict) for doc in docs), f"{path}: not a mapping"
    return cast(list[Resource], docs)


@cache
def kustomization() -> Resource:
    (doc,) = documents(KUSTOMIZATION)
    return doc


def listed_files() -> list[Path]:
    return [K8S / str(name) for name in kustomization().get("resources", [])]


@cache
def applied() -> tuple[Resource, ...]:
    return tuple(doc for path in listed_files() for doc in documents(path))


def find(kind: str, name: str | None = None) -> Resource:
    found = [r for r in applied() if r["kind"] == kind and name in (None, r["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in kustomization.yaml"
    return found[0]


def workload() -> Resource:
    return find("StatefulSet")


def pod_spec() -> Resource:
    spec: Resource = workload()["spec"]["template"]["spec"]
    return spec


def pod_labels() -> dict[str, str]:
    labels: dict[str, str] = workload()["spec"]["template"]["metadata"]["labels"]
    return labels


def container() -> Resource:
    (store,) = pod_spec()["containers"]
    return cast(Resource, store)


def env() -> dict[str, Resource]:
    return {var["name"]: var for var in container().get("env", [])}


def out_of_band_secret() -> Resource:
    (secret,) = documents(OUT_OF_BAND_SECRET)
    assert secret["kind"] == "Secret"
    return secret


def secret_keys() -> set[str]:
    secret = out_of_band_secret()
    return set(secret.get("stringData", {})) | set(secret.get("data", {}))


@cache
def production() -> Settings:
    """config/production.toml as a pod loads it (the token comes from the Secret)."""
    return load_settings({"ADMIN_TOKEN": secrets.token_hex(32)}, config_file=PRODUCTION_TOML)


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of nested mappings and lists."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


# -- kustomization ---------------------------------------------------------------------


def test_kustomization_lists_plain_local_files() -> None:
    k = kustomization()
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert k["kind"] == "Kustomization"
    # anything else (patches, generators, labels, namespace...) would change what is
    # applied, and this test does not implement kustomize
    assert set(k) == {"apiVersion", "kind", "resources"}
    names = [str(name) for name in k["resources"]]
    assert len(names) == len(set(names)), "a resource is listed twice"
    for name in names:
        assert re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)*\.yaml", name), f"not a local file: {name}"
        assert (K8S / name).is_file(), f"kustomization.yaml lists a missing file: {name}"
        assert documents(K8S / name), f"{name} holds no resource"


def test_every_manifest_is_applied_or_is_the_out_of_band_secret() -> None:
    manifests = set(K8S.glob("*.yaml")) - {KUSTOMIZATION}
    assert manifests == {*listed_files(), OUT_OF_BAND_SECRET}
    assert OUT_OF_BAND_SECRET not in listed_files()
    assert not [r for r in applied() if r["kind"] == "Secret"], "secrets are created out of band"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_applied_resources_validate_strictly(version: str) -> None:
    for resource in (*applied(), out_of_band_secret()):
        where = f"{resource['kind']}/{resource['metadata']['name']}"
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{where} is invalid for Kubernetes {version}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:  # a CRD, say
            pytest.fail(f"{where} cannot be validated: {exc.message}")
    ids = [(r["kind"], r["metadata"]["name"]) for r in applied()]
    assert len(ids) == len(set(ids)), "two resources of the same kind and name"
    # the namespace is chosen at apply time, the Secret's included
    assert not [r for r in applied() if "namespace" in r["metadata"]]


# -- references ------------------------------------------------------------------------


def test_everything_the_statefulset_refers_to_exists() -> None:
    spec = workload()["spec"]
    volumes = {v["name"] for v in pod_spec().get("volumes", [])}
    claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    assert not volumes & claims
    for mount in container().get("volumeMounts", []):
        assert mount["name"] in volumes | claims, f"volume {mount['name']} is not declared"
    for key, ref in walk(spec):
        if key in ("configMapKeyRef", "configMapRef", "configMap"):
            config_map = find("ConfigMap", ref["name"])
            if "key" in ref:
                assert ref["key"] in config_map.get("data", {})
        elif key in ("secretKeyRef", "secretRef", "secret"):
            name = ref.get("name") or ref.get("secretName")
            assert name == out_of_band_secret()["metadata"]["name"], f"unknown Secret {name}"
            if "key" in ref:
                assert ref["key"] in secret_keys(), f"secret.example.yaml lacks {ref['key']}"
        elif key == "persistentVolumeClaim":
            find("PersistentVolumeClaim", ref["claimName"])
    assert selects(spec["selector"]["matchLabels"], pod_labels())


def test_services_pdb_and_hpa_point_at_the_replicas() -> None:
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    services = [r for r in applied() if r["kind"] == "Service"]
    assert services
    for service in services:
        assert selects(service["spec"]["selector"], pod_labels())
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports
    governing = find("Service", workload()["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None", "a StatefulSet's service is headless"
    pdb = find("PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels())
    target = find("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        workload()["apiVersion"],
        workload()["kind"],
        workload()["metadata"]["name"],
    )
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container()[probe]["httpGet"]["port"] in ports


def test_port_and_scrape_annotations_match_the_settings() -> None:
    (port,) = container()["ports"]
    annotations = workload()["spec"]["template"]["metadata"]["annotations"]
    assert port["containerPort"] == production().server.port
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(production().server.port)
    assert annotations["prometheus.io/path"] == "/metrics"


# -- settings --------------------------------------------------------------------------


def test_configmap_carries_production_toml_as_the_config_file() -> None:
    config_map = find("ConfigMap")
    assert config_map["data"] == {"production.toml": PRODUCTION_TOML.read_text(encoding="utf-8")}, (
        "k8s/configmap.yaml must carry a verbatim copy of config/production.toml (and nothing "
        "else: settings belong in the file)"
    )
    volume = next(v for v in pod_spec()["volumes"] if "configMap" in v)
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    mount = next(m for m in container()["volumeMounts"] if m["name"] == volume["name"])
    assert mount.get("readOnly") is True
    assert "subPath" not in mount, "a subPath mount never sees the ConfigMap change"
    assert env()["MDS_CONFIG"]["value"] == str(PurePosixPath(mount["mountPath"], "production.toml"))


def test_settings_come_from_the_file_and_only_secrets_from_the_environment() -> None:
    assert "envFrom" not in container(), "list variables one by one"
    for name, var in env().items():
        if name != "MDS_CONFIG":
            assert "secretKeyRef" in var.get("valueFrom", {}), f"{name}: put it in production.toml"
    names = set(env())
    assert {"DATABASE_URL", "ADMIN_TOKEN", "MDS_FEEDBACK_REDIS_URL"} <= names
    assert names - {"MDS_CONFIG"} <= secret_keys()


def test_production_toml_holds_no_secret_and_loads() -> None:
    data = tomllib.loads(PRODUCTION_TOML.read_text(encoding="utf-8"))
    assert "admin_token" not in data
    assert "database_url" not in data
    assert "url" not in data.get("feedback", {}).get("redis", {})
    assert "url" not in data.get("feedback", {}).get("webhook", {})
    s = production()
    assert s.env == "production"
    assert s.server.host == "0.0.0.0"
    assert not s.admin_token_is_default
    # without the Secret's token it is the default one, which production refuses
    with pytest.raises(ConfigError, match="admin_token is still the default"):
        load_settings({}, config_file=PRODUCTION_TOML)
    # the example Secret's values are well-formed for the settings they fill
    example = dict(out_of_band_secret()["stringData"])
    example["ADMIN_TOKEN"] = secrets.token_hex(32)
    # its tenants' tokens are placeholders too short for production: refused as shipped
    with pytest.raises(ConfigError, match=r"auth\.tenants\.desk-a .*at least 32"):
        load_settings(example, config_file=PRODUCTION_TOML)
    tenants = json.loads(example["MDS_AUTH_TENANTS"])
    example["MDS_AUTH_TENANTS"] = json.dumps({tenant: secrets.token_hex(32) for tenant in tenants})
    loaded = load_settings(example, config_file=PRODUCTION_TOML)
    assert loaded.database_url is not None
    assert loaded.feedback.redis.url is not None
    assert set(loaded.auth.tenants) == {"desk-a", "desk-b"}


def test_dead_letters_live_on_each_replicas_own_claim() -> None:
    path = PurePosixPath(production().coordinator.dead_letter_path)
    assert path.is_absolute()
    mount = max(
        (m for m in container()["volumeMounts"] if path.is_relative_to(m["mountPath"])),
        key=lambda m: len(m["mountPath"]),
    )
    spec = workload()["spec"]
    (template,) = (
        t for t in spec["volumeClaimTemplates"] if t["metadata"]["name"] == mount["name"]
    )
    assert template["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert not mount.get("readOnly")
    # scaling down or deleting the StatefulSet must not delete dead letters
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    assert pod_spec()["securityContext"]["fsGroup"] == pod_spec()["securityContext"]["runAsUser"]


def test_grace_period_covers_the_whole_shutdown() -> None:
    s = production()
    pre_stop = container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= 5, "endpoints need a few seconds to be removed everywhere"
    shutdown = (
        pre_stop
        + math.ceil(s.server.graceful_timeout)  # what uvicorn is given
        + s.coordinator.drain_timeout
        + s.feedback.webhook.timeout  # webhook flush
        + 3 * s.feedback.redis.timeout  # bridge stop, publisher flush, publisher close
    )
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert grace >= shutdown + SHUTDOWN_SLACK_SEC, f"{grace} s < {shutdown} s + slack"


def test_autoscaling_reacts_to_bursts_without_flapping() -> None:
    hpa = find("HorizontalPodAutoscaler")["spec"]
    assert "replicas" not in workload()["spec"], "the HPA owns the replica count"
    ((metric),) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert container()["resources"]["requests"]["cpu"], "utilisation is relative to the request"
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    up, down = hpa["behavior"]["scaleUp"], hpa["behavior"]["scaleDown"]
    assert up["stabilizationWindowSeconds"] <= 60
    assert down["stabilizationWindowSeconds"] >= 180
    for direction in (up, down):
        assert direction["policies"]
        assert direction.get("selectPolicy") != "Disabled"
        for policy in direction["policies"]:
            assert policy["value"] > 0
            assert policy["periodSeconds"] > 0
    assert all(p["type"] == "Pods" and p["value"] == 1 for p in down["policies"])
    connections = hpa["maxReplicas"] * production().database.pool_max_size
    assert connections <= POSTGRES_CONNECTIONS
    pdb = find("PodDisruptionBudget")["spec"]
    if "maxUnavailable" in pdb:
        assert pdb["maxUnavailable"] == 1
    else:
        assert pdb["minAvailable"] < hpa["minReplicas"], "a drain could never evict a replica"


# -- image -----------------------------------------------------------------------------


def containerfile_instructions() -> list[tuple[str, str]]:
    text = CONTAINERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines()]
    return [
        (ln.split(None, 1)[0].upper(), ln.split(None, 1)[1])
        for ln in lines
        if ln and not ln.startswith("#")
    ]


def test_image_carries_the_same_config_file_path() -> None:
    instructions = containerfile_instructions()
    copies = [args.split() for op, args in instructions if op == "COPY"]
    assert ["config/production.toml", env()["MDS_CONFIG"]["value"]] in copies
    envs = " ".join(args for op, args in instructions if op == "ENV")
    assert f"MDS_CONFIG={env()['MDS_CONFIG']['value']}" in envs.split()


def test_build_context_is_an_allow_list_of_what_the_image_copies() -> None:
    patterns = [
        ln.strip()
        for ln in CONTAINERIGNORE.read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert patterns[0] == "*", "exclude everything, then let through what is copied"
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    for op, args in containerfile_instructions():
        if op != "COPY" or args.startswith("--from"):
            continue
        for source in args.split()[:-1]:
            assert any(source.rstrip("/") == a or source.startswith(a + "/") for a in allowed), (
                f"COPY {source} is not let into the build context"
            )
    for never in (".venv", ".mds", "tests", ".git", "bench", "examples", "k8s", ".coverage"):
        assert not [a for a in allowed if a == never or a.startswith(never + "/")]
