"""/docs and /redoc load nothing from another host, and what they load is served, without a key.

The fast-tier half of tests/system/test_docs_browser.py (which renders the pages in Chromium with
no network): FastAPI's default pages point at a CDN, so this fails on them without a browser.
"""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from src.api.main import create_app
from tests.support.fixtures import make_settings
from tests.support.processes import RedisServer

LINKING = ("src", "href", "spec-url")  # spec-url: ReDoc's <redoc> element


class Links(HTMLParser):
    """Every URL a page's tags load or point at."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in LINKING and value]


@pytest.fixture
def secured(redis_server: RedisServer, storage: Path, conn: object) -> Iterator[TestClient]:
    """An app with an API key: the docs and their assets must stay open all the same."""
    settings = make_settings(redis_server.port, storage, api_key="docs-test-key")
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_same_origin_assets_that_are_served(secured: TestClient, page: str):
    resp = secured.get(page)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    links = Links()
    links.feed(resp.text)
    assert any(url.endswith(".js") for url in links.urls), links.urls
    for url in links.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = secured.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 0, url
