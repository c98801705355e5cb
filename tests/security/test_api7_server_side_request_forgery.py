"""API7:2023 Server Side Request Forgery.

The API never fetches anything a client names: no input is a URL, and no code that serves requests
opens a connection anywhere but to the services the settings configure. These tests keep it so: a new
URL-shaped input, or an HTTP client imported where requests are served, fails here and needs a
decision (and an allow-list of destinations) rather than slipping in.
"""

import ast
import pathlib

import pytest
import yaml
from django.test import Client

ROOT = pathlib.Path(__file__).resolve().parents[2]
APPS = ("accounts", "matching", "settlement", "console", "exchange")
HTTP_CLIENTS = {"requests", "httpx", "urllib", "urllib3", "http", "aiohttp", "socket", "pycurl"}

# Modules that do open connections, and why none of them takes its destination from a client.
ALLOWED = {
    # Development only: plays custody by calling this exchange's own API at the configured address.
    "accounts/management/commands/run_custody_simulator.py",
    # The development supervisor: waits for the local services and the API it started.
    "exchange/stack.py",
    # /readyz: opens a socket to each Kafka broker of settings.KAFKA, nothing else.
    "exchange/health.py",
}

URL_WORDS = ("url", "uri", "callback", "webhook", "hook", "redirect")


def _imports(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_code_that_serves_requests_imports_an_http_client():
    offenders = []
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if "/migrations/" in relative or relative in ALLOWED:
                continue
            found = _imports(path) & HTTP_CLIENTS
            if found:
                offenders.append(f"{relative}: {sorted(found)}")
    assert offenders == []


def test_the_allowed_modules_still_exist():
    # An allow-list entry for a file that moved would silently stop guarding anything.
    assert all((ROOT / name).is_file() for name in ALLOWED)


@pytest.mark.django_db
def test_no_request_field_of_the_api_is_a_url():
    schema = yaml.safe_load(Client().get("/api/schema/").content)
    suspicious = []

    def visit(where: str, node: object) -> None:
        if isinstance(node, dict):
            for name, prop in (node.get("properties") or {}).items():
                fmt = prop.get("format", "") if isinstance(prop, dict) else ""
                if fmt in ("uri", "url", "hostname", "ipv4", "ipv6") or any(w in name.lower() for w in URL_WORDS):
                    suspicious.append(f"{where}.{name}")
                visit(f"{where}.{name}", prop)
            for value in node.values():
                if isinstance(value, (dict, list)):
                    visit(where, value)
        elif isinstance(node, list):
            for item in node:
                visit(where, item)

    components = schema["components"]["schemas"]
    for name, component in components.items():
        if name.endswith("Request"):
            visit(name, component)
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if any(w in parameter["name"].lower() for w in URL_WORDS):
                    suspicious.append(f"{method.upper()} {path} ?{parameter['name']}")
    assert any(name.endswith("Request") for name in components)  # the walk saw the request bodies
    assert suspicious == []
