"""Scraping /metrics in tests: the samples by name and labels."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

GET_ME = {"grpc_type": "unary", "grpc_service": "luman.auth.v1.AuthService", "grpc_method": "GetMe"}


def scrape(url: str) -> Samples:
    """GET `url` (a /metrics address) and parse it; fails unless it answers 200."""
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when absent (a labelled counter appears with its first count)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)
