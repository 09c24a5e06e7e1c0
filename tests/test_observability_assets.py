"""deploy/: the Grafana dashboard and the Prometheus alerting rules, checked against
the metrics a running service really exposes, and by promtool.

- Every metric (and label) a dashboard panel or template variable queries exists on a
  live ``/metrics`` scrape of the real app, after activity on every path: bars written
  with ``wait=commit``, a poison bar dead-lettered, an SSE stream, a webhook and Redis.
  Names are extracted from the PromQL by ``promql_selectors`` (tested below).
- Every metric the alerting rules query exists on that scrape too (except ``up``,
  which Prometheus makes).
- ``promtool check metrics`` lints the live scrape; ``promtool check rules`` and
  ``promtool test rules`` check the rules and run their unit tests; the dashboard's
  queries go through ``promtool check rules`` too (PromQL syntax). Without promtool
  these skip, saying why; under ``MDS_TEST_REQUIRE_SERVICES=1`` they fail
  (``.ci/run`` installs it: Debian package ``prometheus``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families

from market_data_store.storage import BarRow
from tests.support.bars import bars_body, row
from tests.support.http_receiver import HttpReceiver
from tests.support.postgres import REQUIRE_SERVICES, DatabaseFactory
from tests.support.redis_server import unique_channel
from tests.support.service import running_service, service_settings
from tests.support.sse import open_stream
from tests.support.waits import until

ROOT = Path(__file__).parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "market-data-store.json"
RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"
RULES_TESTS = ROOT / "deploy" / "prometheus" / "rules.test.yaml"

# Series the rules query that no /metrics of ours shows, and why.
SYNTHETIC = {"up": "made by Prometheus for every scrape target"}
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
SEVERITIES = {"warning", "critical"}
PROMTOOL_TIMEOUT = 30


# -- PromQL: which metrics and labels an expression reads ------------------------------------


@dataclass(frozen=True)
class Selectors:
    """What a PromQL expression reads: metric names, label names (in matchers and
    in by/without/on/ignoring/group_* lists), and matchers with a literal value."""

    metrics: frozenset[str]
    labels: frozenset[str]
    matchers: frozenset[tuple[str, str, str]]  # (label, operator, value)


_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
    | (?P<variable>\$(?:\{[^}]*\}|\w+))
    | (?P<number>(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?:[A-Za-z]\w*)?)
    | (?P<identifier>[A-Za-z_:][\w:]*)
    | (?P<operator>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}\[\]@])
    """,
    re.VERBOSE,
)
# Case-insensitive in PromQL, like the aggregation operators.
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
     "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
)  # fmt: skip
_MATCH_OPERATORS = frozenset({"=", "!=", "=~", "!~"})


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    start: int
    end: int


def _tokenize(expr: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise ValueError(f"cannot read PromQL at {position}: {expr[position:][:20]!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind not in ("space", "comment"):
            tokens.append(_Token(kind, match.group(), match.start(), match.end()))
        position = match.end()
    return tokens


def _unquote(token: _Token) -> str:
    inner = token.text[1:-1]
    return inner if token.text[0] == "`" else re.sub(r"\\(.)", r"\1", inner)


def promql_selectors(expr: str) -> Selectors:
    """The metrics and labels ``expr`` reads. Raises ValueError on what it cannot read
    (unbalanced brackets, a templated metric name, a regex on ``__name__``)."""
    tokens = _tokenize(expr)
    metrics: set[str] = set()
    labels: set[str] = set()
    matchers: set[tuple[str, str, str]] = set()

    def at(i: int) -> _Token:
        if i >= len(tokens):
            raise ValueError(f"unexpected end of {expr!r}")
        return tokens[i]

    def selector(i: int) -> int:  # tokens[i] is "{": read matchers up to the "}"
        i += 1
        while at(i).text != "}":
            name = at(i)
            if name.kind == "string" and at(i + 1).text in (",", "}"):
                metrics.add(_unquote(name))  # {"metric.name"} (PromQL 3)
                i += 1
            else:
                op, value = at(i + 1), at(i + 2)
                if name.kind not in ("identifier", "string") or op.text not in _MATCH_OPERATORS:
                    raise ValueError(f"bad matcher at {name.start} in {expr!r}")
                if value.kind != "string":
                    raise ValueError(f"matcher value is not a string at {value.start}")
                label = name.text if name.kind == "identifier" else _unquote(name)
                literal = _unquote(value)
                if label == "__name__":
                    if op.text != "=":
                        raise ValueError(f"cannot check a {op.text} on __name__ in {expr!r}")
                    metrics.add(literal)
                else:
                    labels.add(label)
                    if "$" not in literal:
                        matchers.add((label, op.text, literal))
                i += 3
            if at(i).text == ",":
                i += 1
        return i + 1

    def skip_brackets(i: int) -> int:  # tokens[i] is "[": a range or subquery
        depth = 0
        while True:
            text = at(i).text
            depth += (text == "[") - (text == "]")
            i += 1
            if depth == 0:
                return i

    def label_list(i: int) -> int:  # tokens[i] is "(": label names up to the ")"
        i += 1
        while at(i).text != ")":
            token = at(i)
            if token.kind not in ("identifier", "string"):
                raise ValueError(f"bad label list at {token.start} in {expr!r}")
            labels.add(token.text if token.kind == "identifier" else _unquote(token))
            i += 2 if at(i + 1).text == "," else 1
        return i + 1

    depth = 0
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.text == "{":
            i = selector(i)
            continue
        if token.text == "[":
            i = skip_brackets(i)
            continue
        if token.text in ("}", "]"):
            raise ValueError(f"unbalanced {token.text!r} at {token.start} in {expr!r}")
        depth += (token.text == "(") - (token.text == ")")
        if depth < 0:
            raise ValueError(f"unbalanced ')' at {token.start} in {expr!r}")
        if token.kind == "identifier":
            word = token.text.lower()
            following = tokens[i + 1].text if i + 1 < len(tokens) else None
            if word in _LABEL_LISTS and following == "(":
                i = label_list(i + 1)
                continue
            if word in _LABEL_LISTS and word not in ("group_left", "group_right"):
                raise ValueError(f"{token.text} without a label list in {expr!r}")
            if not (word in _LABEL_LISTS or word in _KEYWORDS or word in _AGGREGATIONS
                    or following == "("):  # fmt: skip
                neighbours = tokens[max(i - 1, 0) : i + 2]
                if any(t.kind == "variable" and (t.end == token.start or t.start == token.end)
                       for t in neighbours):  # fmt: skip
                    raise ValueError(f"templated metric name near {token.text!r} in {expr!r}")
                metrics.add(token.text)
        i += 1
    if depth:
        raise ValueError(f"unbalanced '(' in {expr!r}")
    return Selectors(frozenset(metrics), frozenset(labels), frozenset(matchers))


_LABEL_VALUES = re.compile(
    r"^\s*label_values\((?:(?P<selector>.*),)?\s*(?P<label>\w+)\s*\)\s*$", re.S
)
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.*)\)\s*$", re.S)


def variable_selectors(query: str) -> Selectors:
    """What a Grafana Prometheus template-variable query reads."""
    if match := _LABEL_VALUES.match(query):
        found = promql_selectors(match["selector"] or "")
        return Selectors(found.metrics, found.labels | {match["label"]}, found.matchers)
    if match := _QUERY_RESULT.match(query):
        return promql_selectors(match["expr"])
    raise ValueError(f"unsupported variable query {query!r}")


SELECTOR_CASES: list[tuple[str, set[str], set[str]]] = [
    ("up", {"up"}, set()),
    ("rate(foo_total[5m])", {"foo_total"}, set()),
    (
        'sum by (le, coordinator_id) (rate(x_bucket{instance=~"$instance"}[$__rate_interval]))',
        {"x_bucket"},
        {"le", "coordinator_id", "instance"},
    ),
    ("histogram_quantile(0.99, sum(rate(a_bucket[5m])) by (le))", {"a_bucket"}, {"le"}),
    ("a / on(instance) group_left(coordinator_id) b", {"a", "b"}, {"instance", "coordinator_id"}),
    ("a * on (job) group_right b", {"a", "b"}, {"job"}),
    ("a > bool 0 and b unless c or d", {"a", "b", "c", "d"}, set()),
    ("SUM BY (x) (y) AND z", {"y", "z"}, {"x"}),
    ('{__name__="foo", job="x"}', {"foo"}, {"job"}),
    ('{"dotted.metric", job="x"}', {"dotted.metric"}, {"job"}),
    ("topk(5, x) offset 1h30m", {"x"}, set()),
    ("x @ start() - x @ 1609746000", {"x"}, set()),
    ("max_over_time(deriv(x[5m])[30m:1m])", {"x"}, set()),
    ('label_replace(up, "dst", "$1", "src", "(.*)")', {"up"}, set()),
    ('count_values("version", build_info)', {"build_info"}, set()),
    ("sum without (instance) (x) # comment: not_a_metric", {"x"}, {"instance"}),
    ('x{a="}", b!~"[", c=`)`}', {"x"}, {"a", "b", "c"}),
    ("vector(1) + time() * 1e-3 + 0x1F - Inf + NaN + .5", set(), set()),
    ("recording:rule:rate5m / ignoring(le) other", {"recording:rule:rate5m", "other"}, {"le"}),
    ("histogram_quantile(${q}, rate(h_bucket[5m]))", {"h_bucket"}, set()),
]


@pytest.mark.parametrize(("expr", "metrics", "labels"), SELECTOR_CASES)
def test_promql_selectors_extracts_metrics_and_labels(
    expr: str, metrics: set[str], labels: set[str]
) -> None:
    found = promql_selectors(expr)
    assert (set(found.metrics), set(found.labels)) == (metrics, labels)


def test_promql_selectors_keeps_literal_matchers_only() -> None:
    found = promql_selectors('x{a="1", b!="/v1/x", c=~"5..", d=~"$var", e!~"\\"q\\""}')
    assert found.matchers == {("a", "=", "1"), ("b", "!=", "/v1/x"), ("c", "=~", "5.."),
                              ("e", "!~", '"q"')}  # fmt: skip


@pytest.mark.parametrize(
    "expr",
    [
        "rate(x[5m]",  # unbalanced (
        "rate(x[5m]))",  # unbalanced )
        'x{a="1"',  # unterminated selector
        "x{a=1}",  # matcher value not a string
        "x[5m",  # unterminated range
        'x{a="1}',  # unterminated string
        "sum by le (x)",  # by without a list
        "mds_${name}_total",  # templated metric name
        '{__name__=~"mds_.*"}',  # cannot be checked
        "x; y",  # not PromQL
    ],
)
def test_promql_selectors_refuses_what_it_cannot_read(expr: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - every refusal is a ValueError
        promql_selectors(expr)


def test_variable_selectors() -> None:
    found = variable_selectors('label_values(m{instance=~"$instance"}, coordinator_id)')
    assert (found.metrics, found.labels) == ({"m"}, {"instance", "coordinator_id"})
    assert variable_selectors("label_values(job)").metrics == frozenset()
    assert variable_selectors("query_result(sum by (x) (y))").metrics == {"y"}
    with pytest.raises(ValueError, match="unsupported"):
        variable_selectors("metrics(mds_.*)")


# -- the dashboard, on its own ----------------------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels (collapsed rows) included."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def panel_queries() -> list[tuple[str, str]]:
    """(where, expr) of every panel target."""
    return [
        (f"panel {panel['title']!r} target {target['refId']}", target["expr"])
        for panel in iter_panels(load_dashboard()["panels"])
        for target in panel.get("targets", [])
    ]


def variable_queries() -> list[tuple[str, str]]:
    found = []
    for variable in load_dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found.append((f"variable {variable['name']}", query["query"]
                          if isinstance(query, dict) else query))  # fmt: skip
    return found


def test_dashboard_is_importable() -> None:
    dashboard = load_dashboard()
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"]
    assert dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert {"instance", "coordinator_id"} <= set(variables)
    datasource = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == datasource, variable["name"]
    panels = list(iter_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == datasource, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == datasource, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_dashboard_panels_do_not_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in load_dashboard()["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0, panel["title"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = panel["title"]


def test_dashboard_shows_what_the_release_asks_for() -> None:
    read = set().union(*(promql_selectors(expr).metrics for _, expr in panel_queries()))
    for metric in (
        "mds_coordinator_backpressure_level",
        "mds_coordinator_queue_depth",
        "mds_coordinator_queue_capacity",
        "mds_sink_rows_written_total",
        "mds_coordinator_write_duration_seconds_bucket",
        "mds_coordinator_items_dead_lettered_total",
        "mds_coordinator_circuit_state",
        "mds_feedback_sse_subscribers",
        "mds_feedback_sse_delivered_total",
        "mds_feedback_delivery_failed_total",
        "http_server_request_duration_seconds_bucket",
    ):
        assert metric in read, metric
    exprs = " ".join(expr for _, expr in panel_queries())
    for quantile in ("0.5", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le, coordinator_id)" in exprs
    http = [promql_selectors(e) for _, e in panel_queries() if "http_server_request" in e]
    assert any({"http_route", "http_response_status_code"} <= s.labels for s in http)


def test_every_dashboard_query_can_be_read() -> None:
    for where, expr in [*panel_queries(), *variable_queries()]:
        found = variable_selectors(expr) if where.startswith("variable") else promql_selectors(expr)
        assert found.metrics, f"{where} reads no metric: {expr}"


# -- the rules, on their own ------------------------------------------------------------------


def load_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"]]  # fmt: skip


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in load_rules() if "alert" in rule]


def test_every_alert_has_for_severity_summary_and_description() -> None:
    found = alerts()
    assert {a["alert"] for a in found} == {
        "MdsBackpressureHard",
        "MdsCircuitBreakerOpen",
        "MdsDeadLettersGrowing",
        "MdsWritesStalled",
        "MdsNotReady",
    }
    for alert in found:
        assert re.fullmatch(r"\d+[smh]", alert["for"]), alert["alert"]
        assert alert["labels"]["severity"] in SEVERITIES, alert["alert"]
        assert alert["annotations"]["summary"].strip(), alert["alert"]
        assert alert["annotations"]["description"].strip(), alert["alert"]


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    tests = yaml.safe_load(RULES_TESTS.read_text())
    assert tests["rule_files"] == [RULES.name]
    cases = [case for test in tests["tests"] for case in test.get("alert_rule_test", [])]
    for alert in alerts():
        name = alert["alert"]
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name}: no case where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{name}: no case where it is silent"


# -- promtool ---------------------------------------------------------------------------------


def promtool() -> str:
    """promtool's path; skips (fails under MDS_TEST_REQUIRE_SERVICES=1) without it."""
    path = shutil.which("promtool")
    if path:
        return path
    reason = "promtool is not installed (Debian package prometheus; .ci/run installs it)"
    if REQUIRE_SERVICES:
        pytest.fail(f"MDS_TEST_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def run_promtool(
    *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT,
        cwd=cwd,
        check=False,
    )


def test_promtool_check_rules() -> None:
    proc = run_promtool("check", "rules", "--lint=all", "--lint-fatal", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in proc.stdout


def test_promtool_test_rules() -> None:
    proc = run_promtool("test", "rules", RULES_TESTS.name, cwd=RULES_TESTS.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


# Grafana's variables, replaced by something PromQL accepts where each may stand.
_GRAFANA_DURATIONS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def without_grafana_variables(expr: str) -> str:
    for variable, value in _GRAFANA_DURATIONS.items():
        expr = expr.replace(variable, value)
    return re.sub(r"\$(\{[^}]*\}|\w+)", ".*", expr)  # the others stand in regex matchers


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = [{"record": f"dashboard_query:{n}", "expr": without_grafana_variables(expr)}
             for n, (_, expr) in enumerate(panel_queries())]  # fmt: skip
    path = tmp_path / "dashboard_queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = run_promtool("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- a live scrape ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    text: str  # Prometheus text format 0.0.4
    openmetrics: str
    labels: dict[str, frozenset[str]]  # series name -> label names on it
    values: dict[str, set[str]]  # label name -> values seen
    samples: list[tuple[str, dict[str, str], float]]

    def value(self, series: str, **labels: str) -> float:
        """The sum of ``series`` over the samples having ``labels``."""
        found = [v for name, have, v in self.samples
                 if name == series and labels.items() <= have.items()]  # fmt: skip
        assert found, f"no {series} {labels} on /metrics"
        return sum(found)

    @classmethod
    def parse(cls, text: str, openmetrics: str) -> Scrape:
        labels: dict[str, set[str]] = {}
        values: dict[str, set[str]] = {}
        samples = []
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels.setdefault(sample.name, set()).update(sample.labels)
                for name, value in sample.labels.items():
                    values.setdefault(name, set()).add(value)
                samples.append((sample.name, sample.labels, float(sample.value)))
        frozen = {k: frozenset(v) for k, v in labels.items()}
        return cls(text, openmetrics, frozen, values, samples)


def settled(scrape: Scrape) -> bool:
    """Whether the activity below shows everywhere it will."""
    try:
        return (
            "/v1/feedback/stream" in scrape.values.get("http_route", set())
            and scrape.value("mds_feedback_delivery_sent_total", channel="webhook") >= 1
            and scrape.value("mds_feedback_delivery_sent_total", channel="redis") >= 1
        )
    except AssertionError:
        return False


def poison_bar() -> BarRow:
    """A bar the database refuses (low above open): a write error, then a dead letter."""
    return row(
        provider="obs",
        symbol="POISON",
        open="10",
        high="11",
        low="12",
        close="10.5",
        volume="1",
        received_at=datetime.now(UTC),
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scrape(
    db_factory: DatabaseFactory, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Scrape]:
    """One scrape of the real app after activity on every path the dashboard shows."""
    database_url = await db_factory.create()
    try:
        async with HttpReceiver() as receiver:
            settings = service_settings(
                database_url,
                str(tmp_path_factory.mktemp("observability")),
                MDS_FEEDBACK_WEBHOOK_URL=receiver.url(),
                MDS_FEEDBACK_REDIS_URL=redis_url,
                MDS_FEEDBACK_REDIS_CHANNEL=unique_channel(),
            )
            async with running_service(settings) as service:
                async with open_stream(service.client) as stream:
                    await stream.next_event()  # the snapshot: an SSE event delivered
                    response = await service.client.post(
                        "/v1/bars", params={"wait": "commit"}, json=bars_body(20)
                    )
                    assert response.status_code == 201, response.text
                    coordinator = service.components.coordinator
                    await coordinator.submit(poison_bar())
                    await coordinator.wait_idle()
                    await receiver.wait_for(1)  # the webhook delivered an event
                # Wait (bounded) for what happens after the fact: the stream's request is
                # measured once the server saw it end; deliveries count once answered.
                text = ""

                async def has_settled() -> bool:
                    nonlocal text
                    text = (await service.client.get("/metrics")).text
                    return settled(Scrape.parse(text, ""))

                await until(has_settled, what="the metrics settled", interval=0.05)
                response = await service.client.get(
                    "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
                )
                assert response.headers["content-type"].startswith("application/openmetrics-text")
                yield Scrape.parse(text, response.text)
    finally:
        await db_factory.drop(database_url)


def test_the_scrape_saw_every_kind_of_activity(scrape: Scrape) -> None:
    assert scrape.value("mds_sink_rows_written_total") == 20
    assert scrape.value("mds_coordinator_items_dead_lettered_total") == 1
    assert scrape.value("mds_coordinator_write_errors_total") >= 1
    assert scrape.value("mds_coordinator_write_duration_seconds_count") >= 1
    assert scrape.value("mds_feedback_sse_delivered_total") >= 1
    assert scrape.value("mds_feedback_delivery_sent_total", channel="webhook") >= 1
    assert scrape.value("mds_feedback_delivery_sent_total", channel="redis") >= 1
    assert scrape.value("mds_feedback_redis_received_total", outcome="accepted") >= 1
    assert scrape.value("http_server_request_duration_seconds_count", http_route="/v1/bars") >= 1
    assert "/v1/feedback/stream" in scrape.values["http_route"]


def check_against_scrape(where: str, expr: str, found: Selectors, scrape: Scrape) -> list[str]:
    problems = []
    missing = sorted(m for m in found.metrics if m not in scrape.labels)
    if missing:
        problems.append(f"{where}: no {', '.join(missing)} on /metrics ({expr})")
    known = set(TARGET_LABELS).union(*(scrape.labels.get(m, ()) for m in found.metrics))
    unknown = sorted(found.labels - known)
    if unknown:
        problems.append(f"{where}: label {', '.join(unknown)} is on none of its metrics ({expr})")
    for label, op, literal in sorted(found.matchers):
        # = and != compare with a value that should exist (!= one that does not is a no-op)
        if op in ("=", "!=") and literal not in scrape.values.get(label, set()):
            problems.append(f"{where}: no series has {label}={literal!r} ({expr})")
    return problems


def test_every_metric_the_dashboard_queries_is_exposed(scrape: Scrape) -> None:
    problems = []
    for where, expr in panel_queries():
        problems += check_against_scrape(where, expr, promql_selectors(expr), scrape)
    for where, query in variable_queries():
        problems += check_against_scrape(where, query, variable_selectors(query), scrape)
    assert not problems, "\n".join(problems)


def test_every_metric_the_rules_query_is_exposed(scrape: Scrape) -> None:
    problems = []
    for rule in load_rules():
        found = promql_selectors(rule["expr"])
        absent = set(SYNTHETIC)
        checked = Selectors(found.metrics - absent, found.labels, frozenset(
            (label, op, value) for label, op, value in found.matchers if label != "job"
        ))  # fmt: skip
        if not checked.metrics:
            continue
        where = str(rule.get("alert") or rule.get("record"))
        problems += check_against_scrape(where, rule["expr"], checked, scrape)
    assert not problems, "\n".join(problems)


# Series that exist only once something was measured, and why that is no gap.
MEASURED = {
    "mds_coordinator_write_duration_seconds_bucket": (
        "a histogram has buckets once a batch was written; its only readers are "
        "histogram_quantile panels, which have no value without writes anyway"
    ),
}


async def test_every_queried_series_exists_from_start_up(database_url: str, tmp_path: Path) -> None:
    """Without a webhook or Redis and before any write, error or dead letter, every
    metric the dashboard and the rules read is on /metrics, at 0 where it
    counts something: panels show 0, not "No data", and rate()s see a first error.
    Prometheus's second scrape is checked: the first one's own request is what makes
    ``http_server_request_duration_seconds``."""
    async with running_service(service_settings(database_url, str(tmp_path))) as service:
        assert service.components.feedback_channels.webhook is None
        assert service.components.feedback_channels.redis_publisher is None
        await service.client.get("/metrics")
        idle = Scrape.parse((await service.client.get("/metrics")).text, "")
    queries = [*panel_queries(), *variable_queries()]
    queries += [(str(r.get("alert") or r.get("record")), r["expr"]) for r in load_rules()]
    problems = []
    for where, expr in queries:
        found = variable_selectors(expr) if where.startswith("variable") else promql_selectors(expr)
        metrics = found.metrics - set(SYNTHETIC) - set(MEASURED)
        if metrics:  # labels and their values come with activity: checked on ``scrape``
            checked = Selectors(metrics, frozenset(), frozenset())
            problems += check_against_scrape(where, expr, checked, idle)
    assert not problems, "\n".join(problems)
    assert idle.value("mds_coordinator_write_errors_total") == 0
    assert idle.value("mds_coordinator_items_dropped_total", reason="overflow") == 0
    for channel in ("webhook", "redis"):
        for counter in ("sent", "retried", "discarded", "failed"):
            series = f"mds_feedback_delivery_{counter}_total"
            assert idle.value(series, channel=channel) == 0
    assert idle.value("mds_feedback_redis_received_total", outcome="rejected") == 0


def test_promtool_check_metrics_on_a_live_scrape(scrape: Scrape) -> None:
    """promtool lints the text format (exit 3 and one `<metric> <problem>` line on stderr
    per problem, exit 1 when it cannot parse). Every problem it reports is a naming or
    documentation fault of an instrument, so any output fails."""
    proc = run_promtool("check", "metrics", stdin=scrape.text)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


def test_openmetrics_scrape_parses_strictly(scrape: Scrape) -> None:
    # promtool (2.42) reads only the text format: the OpenMetrics variant (what
    # Prometheus asks for first) goes through prometheus_client's strict parser.
    families = openmetrics_parser.text_string_to_metric_families(scrape.openmetrics)  # type: ignore[no-untyped-call]
    names = {family.name for family in families}
    assert "mds_coordinator_items_submitted" in names
    assert "http_server_request_duration_seconds" in names


def documented_metrics() -> set[str]:
    """Prometheus names in the metrics table of docs/operations.md (``_total`` etc. included)."""
    text = (ROOT / "docs" / "operations.md").read_text()
    table = text[text.index("## Metrics") : text.index("## Operations")]
    names: set[str] = set()
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        stems = re.findall(r"`([a-z_]+)`", first)
        base = stems[0].removesuffix("_total") if stems else ""
        for stem in stems:
            # `_retried_total` after `mds_feedback_delivery_sent_total` shares its prefix
            full = stem if not stem.startswith("_") else base.rsplit("_", 1)[0] + stem
            names.add(full.removesuffix("_total"))
    return names


def test_the_metrics_table_names_every_metric(scrape: Scrape) -> None:
    documented = documented_metrics()
    families = {
        re.sub(r"(_total|_bucket|_sum|_count|_created)$", "", name)
        for name in scrape.labels
        if name.startswith(("mds_", "http_"))
    }
    assert families - documented == set(), "metrics missing from the table in docs/operations.md"
    assert documented - families == set(), "docs/operations.md documents metrics that do not exist"
