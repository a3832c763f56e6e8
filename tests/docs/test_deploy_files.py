"""The deploy recipes agree with the code (Issue 12 item 7): docs/deploy/docker-compose.yml and the Kubernetes
manifests set only real settings, with values the gateway starts with, mount docs/deploy/nginx.conf (the file the
cluster tests run), probe a public route, and name as many gateways as nginx's upstream has servers."""

import json
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcp_bastion.access.routes import Access, RouteTable
from mcp_bastion.cli.preflight import verdict
from mcp_bastion.cluster.settings import cluster_settings
from mcp_bastion.config import Settings, load_servers, split_list

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "docs" / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
NGINX = DEPLOY / "nginx.conf"
KUBERNETES = DEPLOY / "kubernetes"
GATEWAYS = 3  # the recipe: Redis, three gateways, nginx
# What secrets.env and the Secret hold, made as the recipes say (`openssl rand -hex 32`), so serve's strength check
# judges exactly what an operator following them gets.
SECRETS = {"AUTH_TOKEN": secrets.token_hex(32), "CLUSTER_SECRET": secrets.token_hex(32)}
REDIS_PASSWORD = secrets.token_hex(32)  # redis.env / the Secret's REDIS_PASSWORD: Redis requires it
# secrets.env of the compose recipe also holds the Redis URLs, with the password.
COMPOSE_SECRETS = {
    **SECRETS,
    "REDIS_URL": f"redis://:{REDIS_PASSWORD}@redis:6379/0",
    "STORE_URL": f"redis://:{REDIS_PASSWORD}@redis:6379/0",
}
REFERENCE = re.compile(r"\$\((\w+)\)")  # Kubernetes' $(VAR) in an env value


def is_public(path: str) -> bool:
    """Whether GET `path` is a declared route that needs no credential (a probe has none)."""
    found = RouteTable().match(path)
    return found is not None and found[0].access is Access.PUBLIC and "GET" in found[0].methods


def setting_names() -> set[str]:
    """Every environment name a setting is read from (field names and their aliases, upper-case)."""
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(name.upper())
        alias = field.validation_alias
        for choice in getattr(alias, "choices", ()):
            names.add(str(choice).upper())
    return names


def gateway_settings(env: dict[str, str], tmp_path: Path) -> Settings:
    """The settings a gateway with this environment runs with; refused ones fail the test as `serve` would."""
    values = {**SECRETS, **env}
    values["MCP_CONFIG"] = str(DEPLOY / "mcp.json")  # the file the recipes mount at MCP_CONFIG
    values["AUDIT_LOG"] = str(tmp_path / values.get("AUDIT_LOG", "logs/audit.jsonl"))
    settings = Settings(**{key.lower(): value for key, value in values.items()})
    assert cluster_settings(settings) is not None  # cluster mode on, and its settings accepted
    verdict(settings, tmp_path / "absent.env", lambda: 0)  # serve's own refusals (raises ConfigError)
    return settings


def upstream_servers() -> list[str]:
    """`server HOST:PORT` lines of nginx.conf's upstream block."""
    text = NGINX.read_text(encoding="utf-8")
    block = re.search(r"upstream\s+\w+\s*\{(.*?)\}", text, re.DOTALL)
    assert block is not None, "nginx.conf has no upstream block"
    return re.findall(r"^\s*server\s+(\S+?)[\s;]", block[1], re.MULTILINE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")))


def gateways(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: service for name, service in compose["services"].items() if name.startswith("gateway-")}


def test_the_compose_file_runs_redis_three_gateways_and_nginx(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"redis", "nginx", *(f"gateway-{n}" for n in range(1, GATEWAYS + 1))}
    assert len(upstream_servers()) == GATEWAYS


def test_every_compose_variable_is_a_real_setting_and_the_gateways_start(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    known = setting_names()
    redis_port = 6379
    for name, service in gateways(compose).items():
        env = {key: str(value) for key, value in service["environment"].items()}
        assert set(env) <= known, (name, set(env) - known)
        assert service["env_file"] == ["secrets.env"], name  # the secrets and Redis URLs, never in the file
        assert not set(COMPOSE_SECRETS) & set(env), name
        settings = gateway_settings({**COMPOSE_SECRETS, **env}, tmp_path / name)
        assert settings.instance_id == name
        for url in (settings.redis_url, settings.store_url):
            assert url is not None
            assert url.get_secret_value() == f"redis://:{REDIS_PASSWORD}@redis:{redis_port}/0", name
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        [volume] = [v for v in service["volumes"] if v.endswith(":ro")]
        assert volume == f"./mcp.json:{env['MCP_CONFIG']}:ro"
    audit_logs = {
        gateway_settings({**COMPOSE_SECRETS, **service["environment"]}, tmp_path).audit_log
        for service in gateways(compose).values()
    }
    assert len(audit_logs) == GATEWAYS  # one folder per instance: `audit --log 'logs/*/audit.jsonl'` reads them all
    assert load_servers(DEPLOY / "mcp.json", {})


def test_compose_redis_requires_the_password_the_gateways_use(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["env_file"] == ["redis.env"]
    assert '--requirepass "$$REDIS_PASSWORD"' in " ".join(redis["command"])
    assert "REDISCLI_AUTH=" in " ".join(redis["healthcheck"]["test"])  # the probe authenticates too


def test_nginx_mounts_the_tested_config_and_its_upstream_names_the_gateways(compose: dict[str, Any]) -> None:
    nginx = compose["services"]["nginx"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert (COMPOSE.parent / "nginx.conf").resolve() == NGINX
    nginx_ip = nginx["networks"]["bastion"]["ipv4_address"]
    advertised = []
    for name, service in gateways(compose).items():
        env = service["environment"]
        address = service["networks"]["bastion"]["ipv4_address"]
        port = env["PORT"]
        advertised.append(f"{address}:{port}")
        assert env["CLUSTER_ADVERTISE_URL"] == f"http://{address}:{port}", name  # peers reach it directly
        assert nginx_ip in split_list(env["TRUSTED_PROXIES"]), name  # nginx's X-Forwarded-For is believed
        server_name = re.search(r"server_name\s+([^;\s]+)", NGINX.read_text(encoding="utf-8"))
        assert server_name is not None
        assert server_name[1] in split_list(env["ALLOWED_HOSTS"]), name
    assert sorted(upstream_servers()) == sorted(advertised)
    assert set(nginx["depends_on"]) == set(gateways(compose))


def test_compose_healthchecks_probe_a_public_route(compose: dict[str, Any]) -> None:
    for name, service in gateways(compose).items():
        probe = " ".join(service["healthcheck"]["test"])
        path = re.search(r"https?://127\.0\.0\.1:(\d+)(/\S*?)'", probe)
        assert path is not None, probe
        assert path[1] == service["environment"]["PORT"], name
        assert is_public(path[2]), (name, path[2])


def manifests() -> list[dict[str, Any]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    return found


def kind(kind_name: str, name: str) -> dict[str, Any]:
    [found] = [m for m in manifests() if m["kind"] == kind_name and m["metadata"]["name"] == name]
    return found


def test_the_manifests_are_a_gateway_deployment_service_and_redis() -> None:
    kinds = {(m["kind"], m["metadata"]["name"]) for m in manifests()}
    assert {
        ("Deployment", "mcp-bastion"),
        ("Service", "mcp-bastion"),
        ("Deployment", "mcp-bastion-redis"),
        ("Service", "mcp-bastion-redis"),
        ("ConfigMap", "mcp-bastion-servers"),
    } <= kinds
    assert kind("Deployment", "mcp-bastion")["spec"]["replicas"] == GATEWAYS


def test_the_gateway_pods_set_real_settings_from_the_secret_and_start(tmp_path: Path) -> None:
    pod = kind("Deployment", "mcp-bastion")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {item["name"]: item for item in container["env"]}
    referenced = {ref for item in env.values() for ref in REFERENCE.findall(str(item.get("value", "")))}
    assert set(env) - referenced <= setting_names(), set(env) - referenced - setting_names()
    secrets = {name: item["valueFrom"]["secretKeyRef"] for name, item in env.items() if "secretKeyRef" in str(item)}
    assert set(secrets) == {*SECRETS, "REDIS_PASSWORD"}
    assert all(ref == {"name": "mcp-bastion-secrets", "key": name} for name, ref in secrets.items()), secrets
    order = [item["name"] for item in container["env"]]
    assert order.index("REDIS_PASSWORD") < order.index("REDIS_URL")  # $(VAR) expands only earlier variables
    assert env["INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    pod_ip = "10.244.1.7"
    values = {"POD_IP": pod_ip, "REDIS_PASSWORD": REDIS_PASSWORD}
    plain: dict[str, str] = {}
    for name, item in env.items():
        if "value" in item:
            plain[name] = REFERENCE.sub(lambda found: values[found[1]], item["value"])
    plain.pop("POD_IP", None)
    settings = gateway_settings(plain, tmp_path)
    assert settings.cluster_advertise_url == f"http://{pod_ip}:{settings.port}"
    redis = kind("Service", "mcp-bastion-redis")["spec"]["ports"][0]["port"]
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == f"redis://:{REDIS_PASSWORD}@mcp-bastion-redis:{redis}/0"
    redis_pod = kind("Deployment", "mcp-bastion-redis")["spec"]["template"]["spec"]
    [server] = redis_pod["containers"]
    assert server["args"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    redis_env = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in server["env"]}
    password = {"name": "mcp-bastion-secrets", "key": "REDIS_PASSWORD"}
    assert redis_env["REDIS_PASSWORD"] == redis_env["REDISCLI_AUTH"] == password
    servers = kind("ConfigMap", "mcp-bastion-servers")["data"]["mcp.json"]
    assert json.loads(servers) == json.loads((DEPLOY / "mcp.json").read_text(encoding="utf-8"))
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "servers"]
    assert Path(plain["MCP_CONFIG"]) == Path(mount["mountPath"]) / "mcp.json"


def test_readiness_is_a_public_route_and_termination_drains() -> None:
    pod = kind("Deployment", "mcp-bastion")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert ports["http"] == int(env["PORT"])
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert is_public(get["path"]), probe
        assert get["port"] == "http", probe
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain_s = Settings().shutdown_grace_s
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + drain_s
    service = kind("Service", "mcp-bastion")["spec"]
    assert service["selector"] == kind("Deployment", "mcp-bastion")["spec"]["selector"]["matchLabels"]
    assert service.get("sessionAffinity", "None") == "None"  # round robin: no stickiness needed
    assert service["ports"][0]["targetPort"] == "http"
    redis_pod = kind("Deployment", "mcp-bastion-redis")["spec"]["template"]["metadata"]["labels"]
    assert kind("Service", "mcp-bastion-redis")["spec"]["selector"] == redis_pod
