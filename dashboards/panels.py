"""Small builders shared by the dashboards: one Prometheus datasource variable, queries, panel sizes."""

from __future__ import annotations

import json

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
# Probes are answers of the platform, not of the service: kept out of traffic and error panels.
NOT_PROBES = 'route!~"/healthz|/readyz"'


def datasource_variable() -> dashboard.DatasourceVariable:
    return dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")


def query_variable(name: str, label: str, query: str) -> dashboard.QueryVariable:
    return (dashboard.QueryVariable(name).label(label).query(query).datasource(DATASOURCE)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(1))


def target(expr: str, legend: str = "", ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref).datasource(DATASOURCE)


def series(title: str, unit: str, *targets: tuple[str, str], description: str = "",
           width: int = 12, height: int = 8) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).unit(unit).datasource(DATASOURCE).span(width).height(height)
             .fill_opacity(10).line_width(1))
    if description:
        panel = panel.description(description)
    for i, (expr, legend) in enumerate(targets):
        panel = panel.with_target(target(expr, legend, chr(ord("A") + i)))
    return panel


def single(title: str, unit: str, expr: str, *, description: str = "", width: int = 4) -> stat.Panel:
    panel = stat.Panel().title(title).unit(unit).datasource(DATASOURCE).span(width).height(4)
    if description:
        panel = panel.description(description)
    return panel.with_target(target(expr, title))


def render(board: dashboard.Dashboard) -> dict:
    """The dashboard's JSON model, panels numbered in order (the SDK leaves ids to the caller)."""
    model = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    for number, panel in enumerate(model["panels"], 1):
        panel["id"] = number
    return model
