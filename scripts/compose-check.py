#!/usr/bin/env python3
"""Checks docker-compose.yml's shape without a Docker engine: it parses (anchors and merge
keys resolved), the secrets are required (`${VAR:?…}`, never defaulted), every Shop
component has a health check on its own /ready, and every `depends_on` names a service
that exists and, for `service_healthy`, has a health check."""
import re
import sys

import yaml

path = sys.argv[1] if len(sys.argv) > 1 else "docker-compose.yml"
text = open(path).read()
doc = yaml.safe_load(text)
services = doc["services"]
problems = []

for var in ("SHOP_JWT_SECRET", "SHOP_ADMIN_PASSWORD", "SHOP_DB_PASSWORD"):
    uses = re.findall(r"\$\{" + var + r"([^}]*)\}", text)
    if not uses:
        problems.append(f"{var} is not used")
    for rest in uses:
        if not rest.startswith(":?"):
            problems.append(f"{var} must be required (${{{var}:?message}}), found ${{{var}{rest}}}")

ports = {"customers": 8081, "inventory": 8082, "orders": 8083, "payments": 8084,
         "shipping": 8085, "projector": 8091, "read-api": 8090, "gateway": 8080}
for name, port in ports.items():
    service = services.get(name)
    if service is None:
        problems.append(f"no service {name}")
        continue
    if service.get("command") != ["serve", name]:
        problems.append(f"{name}: command should be serve {name}")
    test = (service.get("healthcheck") or {}).get("test") or []
    if f"http://127.0.0.1:{port}/ready" not in test:
        problems.append(f"{name}: health check on http://127.0.0.1:{port}/ready expected, found {test}")
    env = service.get("environment") or {}
    for var in ("SHOP_JWT_SECRET", "SHOP_ADMIN_PASSWORD", "SHOP_DATABASE_URL"):
        if var not in env:
            problems.append(f"{name}: {var} not set")

for name, service in services.items():
    for dep, how in (service.get("depends_on") or {}).items():
        if dep not in services:
            problems.append(f"{name}: depends on unknown service {dep}")
            continue
        condition = how.get("condition")
        if condition not in ("service_started", "service_healthy", "service_completed_successfully"):
            problems.append(f"{name}: depends_on {dep}: unknown condition {condition}")
        if condition == "service_healthy" and "healthcheck" not in services[dep]:
            problems.append(f"{name}: waits for {dep} to be healthy, which has no health check")

gateway_deps = services["gateway"].get("depends_on") or {}
for name in ports:
    if name not in ("gateway", "projector") and gateway_deps.get(name, {}).get("condition") != "service_healthy":
        problems.append(f"gateway: should wait for {name} to be healthy")

for p in problems:
    print(f"compose-check: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"ok: {path}: {len(services)} services, secrets required, /ready health checks, depends_on consistent")
