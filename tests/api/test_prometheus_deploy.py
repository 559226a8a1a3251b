"""deploy/prometheus/: the example scrape config and alert rules parse, and they name what the
live /metrics really exposes (a renamed metric would leave an alert that can never fire)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from tests.support.processes import ROOT
from tests.support.prometheus import Scrape

DEPLOY = ROOT / "deploy" / "prometheus"
CONFIG = DEPLOY / "prometheus.yml"


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def rules() -> list[dict[str, Any]]:
    files = [DEPLOY / name for name in load(CONFIG)["rule_files"]]
    return [rule for path in files for group in load(path)["groups"] for rule in group["rules"]]


def test_the_scrape_config_points_at_the_metrics_route_with_the_api_key():
    config = load(CONFIG)
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "asr" and job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"  # API_KEY, as every protected route wants
    assert job["static_configs"][0]["targets"] == ["localhost:8000"]  # API_PORT's default
    assert all((DEPLOY / name).is_file() for name in config["rule_files"])


def test_the_alerts_the_operator_needs_are_there():
    by_name = {rule["alert"]: rule for rule in rules()}
    assert by_name["AsrNoWorkerReady"]["expr"] == "asr_workers_ready == 0"
    assert "asr_queue_oldest_age_seconds" in by_name["AsrQueueWaitHigh"]["expr"]
    assert by_name["AsrQueueWaitHigh"]["expr"].endswith("> 60")
    assert by_name["AsrJobWaitP95High"]["expr"].endswith("> 60")
    assert "asr_job_failures_total" in by_name["AsrJobFailureRate"]["expr"]
    for rule in by_name.values():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and re.fullmatch(r"\d+m", rule["for"])


def test_every_metric_an_alert_uses_is_exposed(client: TestClient):
    resp = client.get("/metrics")
    assert resp.status_code == 200
    exposed = {s.name for family in Scrape(resp.text).families.values() for s in family.samples}
    for rule in rules():
        used = set(re.findall(r"\basr_[a-z_]+", rule["expr"]))
        assert used or rule["expr"].startswith("up{"), rule["alert"]  # Prometheus' own `up`
        assert used <= exposed, (rule["alert"], used - exposed)
    jobs = {job["job_name"] for job in load(CONFIG)["scrape_configs"]}
    for rule in rules():  # `up{job="..."}` must name a job the config scrapes
        assert set(re.findall(r'job="([^"]+)"', rule["expr"])) <= jobs


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules():
    files = [str(DEPLOY / name) for name in load(CONFIG)["rule_files"]]
    done = subprocess.run(["promtool", "check", "rules", *files], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
