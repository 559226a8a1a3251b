"""A scrape of /metrics, parsed by prometheus_client's own text parser, for assertions."""

from __future__ import annotations

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """The families of one exposition, and the value of any sample by name and labels."""

    def __init__(self, text: str) -> None:
        self.families: dict[str, Metric] = {
            family.name: family for family in text_string_to_metric_families(text)
        }

    def value(self, sample: str, **labels: str) -> float:
        """The sample's value; 0 when the series is absent (a counter never incremented)."""
        found = [
            s.value
            for family in self.families.values()
            for s in family.samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(found) <= 1, f"{sample}{labels} matches {len(found)} series"
        return found[0] if found else 0.0

    def labels(self, sample: str, label: str) -> set[str]:
        """Every value `label` takes among the samples of this name."""
        return {
            s.labels[label]
            for family in self.families.values()
            for s in family.samples
            if s.name == sample and label in s.labels
        }
