"""Parses the Prometheus text format on stdin with prometheus_client's
parser and prints every sample as JSON: [{"name", "labels", "value",
"family", "type"}]. Used by examples/tests/metrics.rs."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        samples.append(
            {
                "family": family.name,
                "type": family.type,
                "name": sample.name,
                "labels": sample.labels,
                "value": sample.value,
            }
        )
json.dump(samples, sys.stdout)
