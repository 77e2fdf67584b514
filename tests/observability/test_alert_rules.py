"""The PrometheusRule the Helm chart ships (helm/meta-agent/files/prometheus-rules.yaml): its
shape, every expression parsed with promql-parser, every `for` a Prometheus duration, and every
metric and label an expression names one the platform exports (read from prometheus_client's
registry after importing the modules that define metrics). The negative cases prove the checks
catch a misspelt metric, a broken expression and the rest."""

import importlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY

RULES_FILE = Path(__file__).parents[2] / "helm" / "meta-agent" / "files" / "prometheus-rules.yaml"
METRICS_MODULES = (
    "services.mesh.metrics",
    "services.llm.metrics",
    "services.orchestrator.metrics",
    "services.orchestrator.relay",
    "services.orchestrator.escalation",
    "services.retrieval.metrics",
    "gateway.ratelimit",
    "gateway.jwks",
)
SEVERITIES = frozenset({"warning", "critical"})
SCRAPE_LABELS = frozenset(
    {"job", "instance", "namespace", "pod", "container", "service", "endpoint", "__name__"}
)
"""Labels Prometheus (and the operator's ServiceMonitor) add to every scraped series."""
DURATION = re.compile(r"^(?:\d+y)?(?:\d+w)?(?:\d+d)?(?:\d+h)?(?:\d+m)?(?:\d+s)?(?:\d+ms)?$")
"""Prometheus' model.Duration, what a rule's `for` takes (a unit is required)."""
TEMPLATE_LABEL = re.compile(r"\$labels\.(\w+)")

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def exported_metrics() -> dict[str, frozenset[str]]:
    """Every series name the platform's registry exposes, with the label names it carries."""
    for module in METRICS_MODULES:
        importlib.import_module(module)
    labels_of: dict[str, frozenset[str]] = {}
    collectors = getattr(REGISTRY, "_names_to_collectors", {})
    for family in REGISTRY.collect():
        collector = collectors.get(family.name) or collectors.get(f"{family.name}_total")
        names = frozenset(getattr(collector, "_labelnames", ()))
        for suffix in _SUFFIXES.get(family.type, ("",)):
            extra = {"le"} if suffix == "_bucket" else set()
            labels_of[family.name + suffix] = names | extra
        for sample in family.samples:  # collectors without declared labels (process_*, ...)
            labels_of.setdefault(sample.name, frozenset(sample.labels))
    return labels_of


@pytest.fixture(scope="module")
def exported() -> dict[str, frozenset[str]]:
    return exported_metrics()


def load_rules() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    return document


def all_rules(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for group in document["spec"]["groups"]:
        yield from group["rules"]


def selectors(expr: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(expr, visit)
    return found


def metric_name(selector: promql_parser.VectorSelector) -> str | None:
    if selector.name:
        return str(selector.name)
    for matcher in selector.matchers.matchers:
        if matcher.name == "__name__" and str(matcher.op).endswith("Equal"):
            return str(matcher.value)
    return None


def grouping_labels(expr: promql_parser.Expr) -> list[tuple[str, list[str]]]:
    """(label, the metrics under the aggregation) for every `by (label)` of the expression."""
    found: list[tuple[str, list[str]]] = []

    def visit(node: promql_parser.Expr) -> None:
        if (
            isinstance(node, promql_parser.AggregateExpr)
            and node.modifier is not None
            and node.modifier.type == promql_parser.AggModifierType.By
        ):
            names = [metric_name(s) or "" for s in selectors(node.expr)]
            found.extend((label, names) for label in node.modifier.labels)

    promql_parser.walk(expr, visit)
    return found


def problems(rule: dict[str, Any], exported: dict[str, frozenset[str]]) -> list[str]:
    """What is wrong with one alerting rule; empty when it is fine."""
    name = rule.get("alert")
    if not name or not isinstance(name, str):
        return [f"a rule without an alert name: {rule}"]
    found: list[str] = []
    for key in ("expr", "for", "labels", "annotations"):
        if key not in rule:
            found.append(f"{name}: no {key}")
    if found:
        return found
    if rule["labels"].get("severity") not in SEVERITIES:
        found.append(f"{name}: severity {rule['labels'].get('severity')!r} not in {SEVERITIES}")
    if not str(rule["annotations"].get("summary", "")).strip():
        found.append(f"{name}: no annotations.summary")
    if not str(rule["annotations"].get("description", "")).strip():
        found.append(f"{name}: no annotations.description")
    period = str(rule["for"])
    if not period or not DURATION.match(period):
        found.append(f"{name}: for {period!r} is not a Prometheus duration")
    try:
        expr = promql_parser.parse(str(rule["expr"]))
    except (ValueError, TypeError) as error:
        return [*found, f"{name}: the expression does not parse: {error}"]
    used = selectors(expr)
    if not used:
        found.append(f"{name}: the expression selects no metric")
    for selector in used:
        metric = metric_name(selector)
        if metric is None:
            found.append(f"{name}: a selector without a metric name: {selector}")
            continue
        if metric not in exported:
            found.append(f"{name}: {metric} is not a metric the platform exports")
            continue
        for matcher in selector.matchers.matchers:
            if matcher.name not in exported[metric] | SCRAPE_LABELS:
                found.append(f"{name}: {metric} has no label {matcher.name}")
    for label, metrics in grouping_labels(expr):
        for metric in metrics:
            if metric in exported and label not in exported[metric] | SCRAPE_LABELS:
                found.append(f"{name}: by ({label}) but {metric} has no label {label}")
    grouped = {label for label, _ in grouping_labels(expr)}
    for text in rule["annotations"].values():
        for label in TEMPLATE_LABEL.findall(str(text)):
            if label not in grouped:
                found.append(f"{name}: the annotations use $labels.{label}, not kept by the expr")
    return found


def test_the_file_is_a_prometheus_rule() -> None:
    document = load_rules()
    assert document["apiVersion"] == "monitoring.coreos.com/v1"
    assert document["kind"] == "PrometheusRule"
    assert document["metadata"]["name"]
    groups = document["spec"]["groups"]
    assert groups and all(group["name"] and group["rules"] for group in groups)
    assert len({group["name"] for group in groups}) == len(groups)
    names = [rule.get("alert") for rule in all_rules(document)]
    assert len(names) == len(set(names)), "alert names are unique"


def test_every_rule_is_well_formed_and_names_exported_metrics(
    exported: dict[str, frozenset[str]],
) -> None:
    found = [problem for rule in all_rules(load_rules()) for problem in problems(rule, exported)]
    assert not found, "\n".join(found)


def test_the_seed_alerts_and_the_issue_alerts_are_there() -> None:
    rules = {rule["alert"]: rule for rule in all_rules(load_rules())}
    expected = {
        "MetaAgentHighLatency": ("warning", "5m", "meta_agent_request_duration_seconds_sum"),
        "MetaAgentHighErrorRate": ("critical", "5m", 'status_code=~"5.."'),
        "MetaAgentLlmFailureRate": ("critical", "5m", "meta_agent_llm_requests_total"),
        "MetaAgentOutboxBacklog": ("warning", "10m", "meta_agent_outbox_backlog"),
        "MetaAgentOutboxStale": ("critical", "5m", "meta_agent_outbox_oldest_seconds"),
        "MetaAgentDegradedTurns": ("warning", "10m", "meta_agent_turns_total"),
    }
    for alert, (severity, period, needle) in expected.items():
        assert alert in rules, alert
        assert (rules[alert]["labels"]["severity"], rules[alert]["for"]) == (severity, period)
        assert needle in rules[alert]["expr"], alert


def test_every_ratio_is_guarded_against_an_idle_system() -> None:
    """A division must come with `and <denominator> > 0` (no alert, no NaN, when idle)."""

    def divides(expr: promql_parser.Expr) -> bool:
        seen: list[bool] = []
        promql_parser.walk(
            expr,
            lambda node: seen.append(
                isinstance(node, promql_parser.BinaryExpr) and str(node.op) == "/"
            ),
        )
        return any(seen)

    for rule in all_rules(load_rules()):
        expr = promql_parser.parse(rule["expr"])
        if not divides(expr):
            continue
        assert isinstance(expr, promql_parser.BinaryExpr) and str(expr.op) == "and", rule["alert"]
        guard = expr.rhs
        assert isinstance(guard, promql_parser.BinaryExpr) and str(guard.op) == ">", rule["alert"]
        assert float(str(guard.rhs)) == 0, rule["alert"]


GOOD = {
    "alert": "Example",
    "expr": 'sum(rate(meta_agent_llm_requests_total{outcome="ok"}[5m])) > 1',
    "for": "5m",
    "labels": {"severity": "warning"},
    "annotations": {"summary": "s", "description": "d"},
}


def _with(**changes: Any) -> dict[str, Any]:
    rule = {**GOOD, **changes}
    return {key: value for key, value in rule.items() if value is not None}


@pytest.mark.parametrize(
    ("rule", "complaint"),
    [
        (_with(expr="sum(rate(meta_agent_llm_request_total[5m])) > 1"), "not a metric the"),
        (_with(expr="meta_agent_request_duration_seconds > 2"), "not a metric the"),
        (_with(expr="sum(rate(meta_agent_llm_requests_total[5m]) > 1"), "does not parse"),
        (_with(expr="sum(rate(meta_agent_llm_requests_total[5x])) > 1"), "does not parse"),
        (_with(expr="rate(meta_agent_llm_requests_total{status=~'5..'}[5m])"), "no label status"),
        (_with(expr="sum by (tenant_id) (meta_agent_llm_circuit_open) > 0"), "no label tenant_id"),
        (_with(expr="vector(1) > 0"), "selects no metric"),
        (_with(**{"for": "5"}), "not a Prometheus duration"),
        (_with(**{"for": "five minutes"}), "not a Prometheus duration"),
        (_with(labels={"severity": "page"}), "severity 'page'"),
        (_with(labels={}), "severity None"),
        (_with(annotations={"description": "d"}), "no annotations.summary"),
        (
            _with(annotations={"summary": "on {{ $labels.deployment }}", "description": "d"}),
            "$labels",
        ),
        (_with(**{"for": None}), "no for"),
    ],
    ids=[
        "misspelt-metric",
        "histogram-without-suffix",
        "unbalanced-parentheses",
        "bad-range",
        "unknown-label",
        "unknown-by-label",
        "no-metric",
        "for-without-unit",
        "for-in-words",
        "unknown-severity",
        "no-severity",
        "no-summary",
        "template-label-not-kept",
        "no-for",
    ],
)
def test_a_bad_rule_is_caught(
    rule: dict[str, Any], complaint: str, exported: dict[str, frozenset[str]]
) -> None:
    assert problems(GOOD, exported) == []
    found = problems(rule, exported)
    assert any(complaint in problem for problem in found), found
    assert all(problem.startswith("Example") for problem in found), "problems name the rule"
