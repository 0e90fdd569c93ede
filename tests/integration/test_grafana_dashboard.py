"""deploy/grafana/bulwark.json: Grafana's dashboard model, PromQL that parses, real metrics.

* The JSON follows Grafana's dashboard model (checked here, field by field): the
  top-level fields, the template variables, and for each panel a unique integer id, a
  built-in panel type, a place on the 24-column grid that no other panel takes, the
  ``${datasource}`` variable as its data source, and targets with a refId and an expr.
* Every PromQL expression (panel targets, annotations, the variables' label_values
  queries) parses: the template variables are replaced by valid values and all of them
  go to one ``promtool check rules`` as recording rules; a failure names the panel.
* Every metric an expression reads is a recording rule of deploy/prometheus/bulwark.rules.yml,
  a series Prometheus itself adds to a scrape (``up``), or a metric a real replica
  exports: a leader and a follower are started, made to export every family once, and
  scraped. Series only the leader exports are read under an aggregation that drops
  ``instance``, so that a leader failover does not split or empty a panel, and panels
  group by labels their metrics have. (tests/metric_names.py reads the names.)

promtool comes from Debian's ``prometheus`` package; when it is missing the test fails
and names ``make debian-tools``.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from bulwark.v1 import (
    breaker_pb2,
    breaker_pb2_grpc,
    bulkhead_pb2,
    bulkhead_pb2_grpc,
    feature_pb2,
    feature_pb2_grpc,
    ratelimit_pb2,
    ratelimit_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from bulwark_server.backups.envelope import KeyRing
from bulwark_server.loopback.deployment import ReplicaProcess
from bulwark_server.loopback.etcd import EtcdMember, free_port
from tests.integration.conftest import get_leader, wait_for
from tests.integration.test_backups import connect, dirs_flag
from tests.integration.test_metrics import scrape
from tests.metric_names import (
    exported_labels,
    exported_names,
    grouping_labels,
    metric_names,
    selectors_keeping_instance,
)
from tests.monitoring_tools import ROOT, RULES_FILE, find_program

DASHBOARD_FILE = ROOT / "deploy" / "grafana" / "bulwark.json"
DATASOURCE = "${datasource}"

# Grafana's dashboard JSON model ("Dashboard JSON model", Grafana docs:
# https://grafana.com/docs/grafana/latest/dashboards/build-dashboards/view-dashboard-json-model/)
# and the panel, row and grid types of Grafana's schema as the Foundation SDK documents
# them (https://grafana.github.io/grafana-foundation-sdk/, dashboard.RowPanel and
# dashboard.GridPos):
# * a dashboard has a title, a uid of 8 to 40 characters, a schemaVersion, panels,
#   templating.list and time.from/to;
# * a panel has an integer id unique within the dashboard, a type and a gridPos of
#   integers: w from 1 to 24 (the grid is 24 columns wide), h in rows, x and y;
# * a row is a panel of type "row" with `collapsed` and `panels`: a collapsed row holds
#   its panels, an expanded one holds none ("panels added directly to a row will be
#   stripped by Grafana unless the row is collapsed") and owns the panels after it, up
#   to the next row, in the order of their positions.
REQUIRED_FIELDS: dict[str, type] = {
    "title": str,
    "uid": str,
    "schemaVersion": int,
    "panels": list,
    "templating": dict,
    "time": dict,
}
GRID_COLUMNS = 24
# Panel plugins built into Grafana 10 and 11 (public/app/plugins/panel). The Angular
# ones (graph, singlestat, table-old) are left out: Grafana 11 no longer renders them.
BUILTIN_PANEL_TYPES = frozenset(
    {
        "alertlist", "annolist", "barchart", "bargauge", "candlestick", "canvas",
        "dashlist", "datagrid", "flamegraph", "gauge", "geomap", "heatmap", "histogram",
        "logs", "news", "nodeGraph", "piechart", "row", "stat", "state-timeline",
        "status-history", "table", "text", "timeseries", "traces", "trend", "xychart",
    }
)  # fmt: skip
VARIABLE_TYPES = frozenset(
    {"query", "custom", "textbox", "constant", "datasource", "interval", "adhoc", "groupby"}
)

# Values the template variables take when an expression is checked: what Grafana puts
# there (a multi-value selection becomes a regex alternation).
VARIABLE_VALUES = {
    "datasource": "prometheus",
    "job": "bulwark",
    "instance": "(bulwark-0:9464|bulwark-1:9464)",
    # Grafana's global variables.
    "__interval": "15s",
    "__interval_ms": "15000",
    "__rate_interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
GLOBAL_VARIABLES = frozenset(name for name in VARIABLE_VALUES if name.startswith("__"))
# $name, ${name}, ${name:format}, [[name]] and [[name:format]], as Grafana reads them.
VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")

# Series Prometheus adds to every scrape of a target: no replica exports them.
PROMETHEUS_SERIES = frozenset(
    {
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    }
)

# -- The dashboard and its queries -----------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD_FILE.read_text()))


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel: the top-level ones and those inside collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels") or ()


@dataclass(frozen=True)
class Query:
    """One PromQL expression of the dashboard and where it is."""

    where: str
    expr: str


def queries(dashboard: dict[str, Any]) -> list[Query]:
    """Panel targets, Prometheus annotations, and the selectors of ``label_values``."""
    found = [
        Query(f'panel {panel["id"]} "{panel.get("title", "")}" target {t["refId"]}', t["expr"])
        for panel in all_panels(dashboard)
        for t in panel.get("targets") or ()
    ]
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            found.append(Query(f'annotation "{annotation["name"]}"', annotation["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        # label_values(selector, label) reads the selector's series; label_values(label)
        # reads none.
        match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", text, re.DOTALL)
        if match:
            found.append(Query(f'variable "{variable["name"]}"', match.group(1)))
    return found


def substitute(expr: str) -> str:
    """``expr`` with each template variable replaced by a value Grafana could give it.

    A ``$1`` is left alone (label_replace's replacement); any other unknown variable
    fails the test.
    """

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group is not None)
        if name.isdigit():
            return match.group(0)
        if name not in VARIABLE_VALUES:
            pytest.fail(f"no test value for ${name} in {expr!r}: add one to VARIABLE_VALUES")
        return VARIABLE_VALUES[name]

    return VARIABLE.sub(value, expr)


def variables_used(expr: str) -> set[str]:
    return {
        name
        for match in VARIABLE.finditer(expr)
        for name in match.groups()
        if name is not None and not name.isdigit()
    }


# -- Grafana's dashboard model ----------------------------------------------------------


def test_the_dashboard_has_grafanas_top_level_fields() -> None:
    dashboard = load_dashboard()
    for field, kind in REQUIRED_FIELDS.items():
        assert isinstance(dashboard.get(field), kind), f"{field} missing or not a {kind}"
    assert dashboard["title"]
    assert 8 <= len(dashboard["uid"]) <= 40, "a uid has 8 to 40 characters"
    # Data sources as {type, uid} references (the model of schemaVersion 36 and later).
    assert dashboard["schemaVersion"] >= 36
    assert isinstance(dashboard["time"].get("from"), str)
    assert isinstance(dashboard["time"].get("to"), str)
    assert isinstance(dashboard["templating"].get("list"), list)
    # Importable as is: Grafana gives the id when it stores the dashboard.
    assert dashboard.get("id") is None


def test_the_variables_pick_a_prometheus_a_job_and_replicas() -> None:
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name, variable in variables.items():
        assert variable.get("type") in VARIABLE_TYPES, f"variable {name}: type"
        if variable["type"] == "query":
            assert variable.get("datasource", {}).get("uid") == DATASOURCE, name
    datasource = variables["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    assert variables["job"]["current"]["value"] == "bulwark"
    instance = variables["instance"]
    assert instance["multi"] is True and instance["includeAll"] is True
    used = {name for query in queries(dashboard) for name in variables_used(query.expr)}
    assert used <= variables.keys() | GLOBAL_VARIABLES, "variables used but not defined"
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            assert annotation["datasource"]["uid"] == DATASOURCE, annotation["name"]


def test_every_panel_has_an_id_a_type_a_datasource_and_targets() -> None:
    dashboard = load_dashboard()
    ids: list[int] = []
    for panel in all_panels(dashboard):
        where = f'panel {panel.get("id")} "{panel.get("title")}"'
        assert type(panel.get("id")) is int, f"{where}: id is not an integer"
        ids.append(panel["id"])
        assert panel.get("type") in BUILTIN_PANEL_TYPES, f"{where}: type {panel.get('type')}"
        assert isinstance(panel.get("title"), str) and panel["title"], f"{where}: title"
        if panel["type"] == "row":
            assert not panel.get("targets"), f"{where}: a row has no queries"
            continue
        assert panel.get("datasource", {}).get("uid") == DATASOURCE, f"{where}: datasource"
        targets = panel.get("targets")
        assert isinstance(targets, list) and targets, f"{where}: no targets"
        ref_ids = [target.get("refId") for target in targets]
        assert all(isinstance(r, str) and r for r in ref_ids), f"{where}: refId"
        assert len(set(ref_ids)) == len(ref_ids), f"{where}: refIds repeat"
        for target in targets:
            assert isinstance(target.get("expr"), str) and target["expr"].strip(), where
            assert target.get("datasource", {}).get("uid") == DATASOURCE, f"{where}: target"
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    assert not repeated, f"panel ids used twice: {repeated}"


def _grid(panel: dict[str, Any]) -> tuple[int, int, int, int]:
    where = f'panel {panel.get("id")} "{panel.get("title")}"'
    grid = panel.get("gridPos")
    assert isinstance(grid, dict), f"{where}: no gridPos"
    values = tuple(grid.get(key) for key in ("x", "y", "w", "h"))
    # bool is an int to Python, not to Grafana.
    assert all(type(v) is int for v in values), f"{where}: gridPos {grid} not integers"
    x, y, w, h = values  # type: ignore[misc]
    assert 1 <= w <= GRID_COLUMNS and 0 <= x and x + w <= GRID_COLUMNS, f"{where}: {grid}"
    assert y >= 0 and h >= 1, f"{where}: {grid}"
    if panel["type"] == "row":
        assert (x, w, h) == (0, GRID_COLUMNS, 1), f"{where}: a row spans the grid, 1 high"
    return x, y, w, h  # type: ignore[return-value]


def _overlaps(panels: list[dict[str, Any]]) -> list[str]:
    """Pairs of panels that take a grid cell both, with the first such cell (x, y)."""
    cells: dict[tuple[int, int], int] = {}
    clashes: dict[tuple[int, int], tuple[int, int]] = {}
    for panel in panels:
        x, y, w, h = _grid(panel)
        for cell in ((cx, cy) for cx in range(x, x + w) for cy in range(y, y + h)):
            other = cells.setdefault(cell, panel["id"])
            if other != panel["id"]:
                clashes.setdefault((other, panel["id"]), cell)
    return [f"panels {a} and {b} both take {cell}" for (a, b), cell in clashes.items()]


def test_panels_lie_on_the_grid_without_overlapping_and_rows_nest() -> None:
    dashboard = load_dashboard()
    top = dashboard["panels"]
    assert not _overlaps(top)
    # Grafana orders panels by position and gives an expanded row those that follow it:
    # listed in that order, what a reader sees in the file is what Grafana shows.
    positions = [(_grid(p)[1], _grid(p)[0]) for p in top]
    assert positions == sorted(positions), "panels not listed in (y, x) order"
    for i, panel in enumerate(top):
        if panel["type"] != "row":
            continue
        where = f'row {panel["id"]} "{panel["title"]}"'
        assert isinstance(panel.get("collapsed"), bool), f"{where}: collapsed"
        nested = panel.get("panels")
        assert isinstance(nested, list), f"{where}: panels"
        if not panel["collapsed"]:
            assert nested == [], f"{where}: an expanded row's panels follow it, not in it"
            continue
        assert nested, f"{where}: collapsed and empty"
        following = top[i + 1] if i + 1 < len(top) else None
        assert following is None or following["type"] == "row", (
            f"{where}: collapsed, yet panel {following['id']} follows it outside a row"
        )
        assert all(p["type"] != "row" for p in nested), f"{where}: a row in a row"
        assert all(_grid(p)[1] > panel["gridPos"]["y"] for p in nested), f"{where}: above it"
        assert not _overlaps(nested), where


# -- PromQL under promtool --------------------------------------------------------------


def test_every_expression_parses(tmp_path: Path) -> None:
    dashboard = load_dashboard()
    found = queries(dashboard)
    assert len(found) > 40
    # Recording rule names say where each expression is, since promtool names the rule.
    where = {f"dashboard:query_{n}": query.where for n, query in enumerate(found)}
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": name, "expr": substitute(query.expr)}
                    for name, query in zip(where, found, strict=True)
                ],
            }
        ]
    }
    rules_file = tmp_path / "dashboard.rules.yml"
    rules_file.write_text(yaml.safe_dump(rules, sort_keys=False))
    result = subprocess.run(
        [str(find_program("promtool")), "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        failed = [
            f"{place}: {found[n].expr}"
            for n, place in enumerate(where.values())
            if re.search(rf"\bdashboard:query_{n}\b", output)
        ]
        pytest.fail("promtool rejects " + ("; ".join(failed) or "the dashboard") + f"\n{output}")
    assert f"SUCCESS: {len(found)} rules found" in output


# -- The metrics a real replica exports -------------------------------------------------


@dataclass(frozen=True)
class Exported:
    """Metric names (series names: counters with _total, histograms with _bucket, ...),
    and the label names of those that have samples."""

    leader: frozenset[str]
    follower: frozenset[str]
    labels: Mapping[str, frozenset[str]]

    @property
    def every(self) -> frozenset[str]:
        return self.leader | self.follower

    @property
    def leader_only(self) -> frozenset[str]:
        return self.leader - self.follower


def _exercise(leader: ReplicaProcess, follower: ReplicaProcess) -> None:
    """Make the leader export every family, leader-only ones and recovery gauges included."""
    with grpc.insecure_channel(leader.address) as channel:
        limit = ratelimit_pb2.Limit(
            domain="shop",
            name="per-user",
            descriptor=[ratelimit_pb2.DescriptorEntry(key="user")],
            rate=ratelimit_pb2.Rate(requests_per_unit=1, unit=ratelimit_pb2.RATE_UNIT_MINUTE),
        )
        limit.detailed_metric = True  # per-descriptor series too
        limits = ratelimit_pb2_grpc.RateLimitServiceStub(channel)
        limits.PutLimit(ratelimit_pb2.PutLimitRequest(limit=limit), timeout=5)
        entry = ratelimit_pb2.DescriptorEntry(key="user", value="alice")
        check = ratelimit_pb2.CheckRequest(
            domain="shop", descriptors=[ratelimit_pb2.RateLimitDescriptor(entries=[entry])]
        )
        for _ in range(2):
            limits.Check(check, timeout=5)
        breakers = breaker_pb2_grpc.CircuitBreakerServiceStub(channel)
        breakers.PutBreaker(breaker_pb2.PutBreakerRequest(name="payments"), timeout=5)
        # Forced open, so that Allow is refused and the refusals counter has a sample.
        breakers.ForceState(
            breaker_pb2.ForceStateRequest(
                name="payments", state=breaker_pb2.BREAKER_STATE_FORCED_OPEN, reason="test"
            ),
            timeout=5,
        )
        breakers.Allow(breaker_pb2.AllowRequest(name="payments"), timeout=5)
        bulkheads = bulkhead_pb2_grpc.BulkheadServiceStub(channel)
        bulkheads.PutBulkhead(
            bulkhead_pb2.PutBulkheadRequest(
                bulkhead=bulkhead_pb2.Bulkhead(name="reports", max_concurrent=3)
            ),
            timeout=5,
        )
        bulkheads.Acquire(bulkhead_pb2.AcquireRequest(bulkhead="reports", holder="w1"), timeout=5)
        instance = registry_pb2.Instance(service="orders-db", id="db-1", address="10.0.0.1:5432")
        instance.ttl.FromSeconds(30)
        registry_pb2_grpc.RegistryServiceStub(channel).RegisterInstance(
            registry_pb2.RegisterInstanceRequest(instance=instance), timeout=5
        )
        feature_pb2_grpc.FeatureServiceStub(channel).PutFeature(
            feature_pb2.PutFeatureRequest(feature=feature_pb2.Feature(name="recommendations")),
            timeout=5,
        )
    with connect(leader) as client:
        client.backup("payments", b"k" * 32)
        client.verify()
        client.drill(client.snapshot()[-1].snapshot.id)
    # Each replica exports what its own verification found: not a leader-only series.
    with connect(follower) as client:
        client.verify()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    """What a leader and a follower export once every capability has been used."""
    root = tmp_path_factory.mktemp("grafana")
    etcd = EtcdMember("grafana", root / "etcd", unsafe_no_fsync=True)
    keks = f"--keks={KeyRing.generate_entry('k1')}"
    replicas: dict[int, ReplicaProcess] = {}
    try:
        etcd.start_healthy()
        while len(replicas) < 2:
            port = free_port()
            if port not in replicas:
                replicas[port] = ReplicaProcess(
                    f"g{len(replicas) + 1}",
                    [etcd.endpoint],
                    root / f"g{len(replicas) + 1}.log",
                    extra_args=[
                        "--snapshot-interval=0",
                        keks,
                        dirs_flag(root / "backups"),
                        "--metrics-listen",
                        f"127.0.0.1:{port}",
                    ],
                )
        # Both start at once: the first to campaign leads.
        for replica in replicas.values():
            replica.start()
        for replica in replicas.values():
            replica.wait_serving()

        def leading() -> int | None:
            for port, replica in replicas.items():
                answer = get_leader(replica.address)
                if answer is not None and answer.is_self:
                    return port
            return None

        leader_port = wait_for(leading, 10)
        assert isinstance(leader_port, int)
        follower_port = next(port for port in replicas if port != leader_port)
        _exercise(replicas[leader_port], replicas[follower_port])

        # The drill's gauges come from the leader's cache of the drill record.
        leader = wait_for(
            lambda: "bulwark_drill_rto_seconds" in (body := scrape(leader_port)[1]) and body, 5
        )
        follower = scrape(follower_port)[1]
        assert isinstance(leader, str)
        labels: dict[str, set[str]] = {}
        for body in (leader, follower):
            for name, found in exported_labels(body).items():
                labels.setdefault(name, set()).update(found)
        yield Exported(
            frozenset(exported_names(leader)),
            frozenset(exported_names(follower)),
            {name: frozenset(found) for name, found in labels.items()},
        )
    finally:
        for replica in replicas.values():
            replica.stop()
        etcd.stop()


def recorded_names() -> set[str]:
    rules = yaml.safe_load(RULES_FILE.read_text())
    return {
        rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule
    }


def test_every_metric_read_is_exported_or_recorded(exported: Exported) -> None:
    known = exported.every | recorded_names() | PROMETHEUS_SERIES
    unknown = {
        f"{name} ({query.where})"
        for query in queries(load_dashboard())
        for name in metric_names(substitute(query.expr))
        if name not in known
    }
    assert not unknown, f"metrics no replica exports and no rule records: {sorted(unknown)}"
    # The fixture did reach the leader-only and recovery families.
    assert {"bulwark_breaker_state", "bulwark_drill_rpo_seconds"} <= exported.leader_only


def test_leader_only_series_are_aggregated_without_instance(exported: Exported) -> None:
    leader_only = set(exported.leader_only)
    kept = {
        f"{query.where}: {sorted(names)}"
        for query in queries(load_dashboard())
        if (names := selectors_keeping_instance(substitute(query.expr), leader_only))
    }
    assert not kept, (
        "series only the leader exports, read with their instance label (a failover "
        f"moves them to another instance): {sorted(kept)}"
    )


def test_panels_group_by_labels_the_metrics_have(exported: Exported) -> None:
    # Only queries whose every metric had samples in the scrape: a family without any
    # (no call shed yet) shows no label names.
    checked = 0
    missing = set()
    for query in queries(load_dashboard()):
        promql = substitute(query.expr)
        names = metric_names(promql)
        if not names or not names <= exported.labels.keys():
            continue
        checked += 1
        # Prometheus adds job and instance to every series it scrapes.
        have = {"job", "instance"}.union(*(exported.labels[name] for name in names))
        missing |= {f"{query.where}: {label}" for label in grouping_labels(promql) - have}
    assert checked > 30
    assert not missing, f"grouped by labels their metrics do not have: {sorted(missing)}"
