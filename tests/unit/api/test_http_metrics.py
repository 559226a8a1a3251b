"""src/api/metrics.py's HTTP counting on a small app of its own: every request is labelled with
the route template it matched, prefixes of included routers and mounts included, so the labels
stay bounded whatever paths clients send."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from src.api.metrics import HttpMetrics, HttpMetricsMiddleware
from tests.support.prometheus import Scrape


def app_with(tmp_path: Path) -> tuple[FastAPI, HttpMetrics]:
    items = APIRouter(prefix="/items")

    @items.get("/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    app = FastAPI()
    app.include_router(items, prefix="/api/v1")
    (tmp_path / "a.css").write_text("body {}")
    app.mount("/static", StaticFiles(directory=tmp_path))
    metrics = HttpMetrics()
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    return app, metrics


def counts(metrics: HttpMetrics) -> dict[tuple[str, str, str], float]:
    family = Scrape(generate_latest(metrics.registry).decode()).families["asr_http_requests"]
    return {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for s in family.samples
        if s.name == "asr_http_requests_total"
    }


def test_labels_are_route_templates_with_their_prefixes(tmp_path: Path):
    app, metrics = app_with(tmp_path)
    with TestClient(app) as client:
        for n in range(5):
            assert client.get(f"/api/v1/items/{n}").status_code == 200
        assert client.get("/api/v1/items/not-a-number").status_code == 422
        assert client.delete("/api/v1/items/1").status_code == 405
        assert client.get("/static/a.css").status_code == 200
        assert client.get("/static/missing.css").status_code == 404
        assert client.get("/elsewhere/1").status_code == 404
    assert counts(metrics) == {
        ("GET", "/api/v1/items/{item_id}", "200"): 5,
        ("GET", "/api/v1/items/{item_id}", "422"): 1,
        ("DELETE", "/api/v1/items/{item_id}", "405"): 1,
        ("GET", "/static/{path}", "200"): 1,
        ("GET", "/static/{path}", "404"): 1,
        ("GET", "unmatched", "404"): 1,
    }


def test_a_root_path_is_not_part_of_the_template(tmp_path: Path):
    app, metrics = app_with(tmp_path)
    # As `uvicorn --root-path /asr` behind a proxy that keeps the prefix: the path has it too.
    with TestClient(app, root_path="/asr") as client:
        assert client.get("/asr/api/v1/items/7").status_code == 200
    assert counts(metrics) == {("GET", "/api/v1/items/{item_id}", "200"): 1}
