"""Renders charts/leaderd for tests/kube_rbac.rs with helm-python-sdk (Helm
embedded, as scripts/check-packaging renders it) and prints the objects as
one JSON list.

    python3 tests/support/render_chart.py SET NAMESPACE

SET is one of the deployment shapes the chart supports, each from a value
set in charts/leaderd/ci/ (with the backend switched where needed):
standalone-kubernetes, sidecar-kubernetes, standalone-redis, sidecar-redis.
The release is named "demo".
"""
import json
import sys

import yaml
import helm_python as helm

CHART = "charts/leaderd"
SETS = {
    "standalone-kubernetes": ("standalone-kubernetes-values.yaml", {}),
    "sidecar-kubernetes": ("sidecar-values.yaml", {"backend": {"type": "kubernetes"}}),
    "standalone-redis": ("standalone-redis-secret-values.yaml", {}),
    "sidecar-redis": ("sidecar-values.yaml", {}),
}


def merge(base, extra):
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def main():
    name, namespace = sys.argv[1], sys.argv[2]
    file, extra = SETS[name]
    with open(f"{CHART}/ci/{file}") as f:
        values = merge(yaml.safe_load(f) or {}, extra)
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values=values, name="demo", namespace=namespace)
    docs = []
    for template, text in sorted(manifests.items()):
        if template.endswith((".yaml", ".yml")):
            docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    json.dump(docs, sys.stdout)


if __name__ == "__main__":
    main()
