"""/docs and /redoc render every operation in real headless Chromium with no network but loopback.

The API runs as uvicorn (ApiProcess) and Chromium loads each page, runs its JavaScript (Swagger UI,
ReDoc), fetches /openapi.json and dumps the rendered DOM (`--dump-dom`; `--virtual-time-budget`
lets the page settle, and virtual time stands still while a fetch is pending). With FastAPI's
default pages, which load their JavaScript from a CDN, both pages stay empty and these tests fail.

Two ways to take the network away, each its own test:
- `netns`: uvicorn and Chromium share a fresh user + network namespace whose only interface is
  `lo`. The kernel enforces it: there is no route out, whatever the page or the browser tries.
  Skipped where the kernel refuses unprivileged namespaces (Docker's default seccomp profile).
- `flags`: in the machine's own network, Chromium resolves no host name but 127.0.0.1 and sends
  everything not on loopback to a proxy port nobody listens on. It runs everywhere.

Chromium is installed by `.ci/run` and `scripts/test.sh`; without it these tests fail under
`CI=true` (set by `.ci/run`) and are skipped elsewhere.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from src.api.main import create_app
from tests.support.fixtures import make_settings
from tests.support.prerequisites import need
from tests.support.processes import ApiProcess, api_env, free_port

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
# Virtual milliseconds: skipped over while the page is idle, so a generous budget costs no time.
VIRTUAL_TIME_MS = 30_000
# The namespace's loopback starts down; `ip` brings it up before uvicorn starts in it.
NETNS = (
    "unshare",
    "--user",
    "--map-root-user",
    "--net",
    "sh",
    "-c",
    'ip link set lo up && exec "$@"',
    "netns",
)


class SwaggerOperations(HTMLParser):
    """Swagger UI: (method, path) of each `.opblock`, from its `opblock-<method>` class and the
    `data-path` of its summary."""

    def __init__(self) -> None:
        super().__init__()
        self.method = ""
        self.found: set[tuple[str, str]] = set()

    @staticmethod
    def expected(schema: dict[str, Any]) -> set[tuple[str, str]]:
        return {(method, path) for path, ops in schema["paths"].items() for method in ops}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        classes = (attr.get("class") or "").split()
        if "opblock" in classes:
            self.method = next(
                (m for c in classes if (m := c.removeprefix("opblock-")) in METHODS), ""
            )
        if "opblock-summary-path" in classes and attr.get("data-path"):
            self.found.add((self.method, attr["data-path"] or ""))


class RedocOperations(HTMLParser):
    """ReDoc: operationId -> the heading of its `operation/<operationId>` section."""

    def __init__(self) -> None:
        super().__init__()
        self.section = ""
        self.heading: list[str] | None = None
        self.found: dict[str, str] = {}

    @staticmethod
    def expected(schema: dict[str, Any]) -> dict[str, str]:
        ops = [op for path in schema["paths"].values() for op in path.values()]
        return {op["operationId"]: op["summary"] for op in ops}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        section = dict(attrs).get("data-section-id") or ""
        if section.startswith("operation/"):
            self.section = section.removeprefix("operation/")
        elif tag == "h2" and self.section:
            self.heading = []

    def handle_data(self, data: str) -> None:
        if self.heading is not None:
            self.heading.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2" and self.heading is not None:
            self.found[self.section] = "".join(self.heading).strip()
            self.heading, self.section = None, ""


class Browser:
    """Headless Chromium, run under `prefix` (e.g. `nsenter` into the API's namespaces), with a
    fresh profile under `profile` each time."""

    def __init__(
        self, binary: str, profile: Path, prefix: tuple[str, ...] = (), flags: tuple[str, ...] = ()
    ) -> None:
        self.binary = binary
        self.profile = profile
        self.prefix = prefix
        self.flags = flags

    def dom(self, url: str) -> str:
        """The DOM once the page has settled."""
        cmd = [
            *self.prefix,
            self.binary,
            "--headless",
            "--no-sandbox",  # runs as root (here, or in the namespace), where the sandbox refuses
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={tempfile.mkdtemp(dir=self.profile)}",  # nothing cached
            f"--virtual-time-budget={VIRTUAL_TIME_MS}",
            *self.flags,
            "--dump-dom",
            url,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The OpenAPI schema the pages are built from: the same app's, in this process."""
    return create_app(make_settings(free_port(), tmp_path_factory.mktemp("schema"))).openapi()


@pytest.fixture(scope="module", params=["netns", "flags"])
def offline(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ApiProcess, Browser]]:
    """The API (without Redis: the docs need none) and a browser that reaches nothing but it."""
    chromium = need("chromium", "chromium")
    tmp_path = tmp_path_factory.mktemp(request.param)
    env = api_env(free_port(), tmp_path / "storage")
    if request.param == "netns":
        need("ip", "iproute2")
        probe = subprocess.run([*NETNS, "true"], capture_output=True, text=True, check=False)
        if probe.returncode != 0:
            pytest.skip(f"no user + network namespace here: {probe.stderr.strip()}")
        api = ApiProcess(env, tmp_path / "api.out", prefix=NETNS).start(ready_path=None)
        into = ("nsenter", f"--target={api.pid}", "--user", "--net", "--preserve-credentials")
        browser = Browser(chromium, tmp_path, prefix=into)
    else:
        api = ApiProcess(env, tmp_path / "api.out").start(ready_path="/docs")
        no_network = (
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--proxy-server=127.0.0.1:{free_port()}",  # nobody listens; loopback bypasses it
        )
        browser = Browser(chromium, tmp_path, flags=no_network)
    try:
        yield api, browser
    finally:
        api.stop()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("page", "reader"), [("/docs", SwaggerOperations), ("/redoc", RedocOperations)]
)
def test_docs_page_renders_every_operation_offline(
    offline: tuple[ApiProcess, Browser],
    schema: dict[str, Any],
    page: str,
    reader: type[SwaggerOperations | RedocOperations],
) -> None:
    """Every operation in the schema, and nothing else, is on the rendered page."""
    api, browser = offline
    rendered = reader()
    rendered.feed(browser.dom(f"{api.url}{page}"))
    assert rendered.found == reader.expected(schema)
