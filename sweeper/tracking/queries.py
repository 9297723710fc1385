"""MLflow search filters and paginated searches, written once: quoting a value, a tag or status clause, joining
clauses, and following every page of a run or experiment search (MLflow returns at most ``SEARCH_PAGE`` a call)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SEARCH_PAGE = 1000


def quote(value: str) -> str:
    """A string literal for an MLflow filter string."""
    return "'" + value.replace("'", "\\'") + "'"


def tag_equals(tag: str, value: str) -> str:
    """Filter clause: tag ``tag`` equals ``value`` (the key is backquoted: tag names contain dots)."""
    return f"tags.`{tag}` = {quote(value)}"


def status_is(status: str) -> str:
    """Filter clause: the run's status is ``status`` (RUNNING, FINISHED, ...)."""
    return f"attributes.status = {quote(status)}"


def all_of(*clauses: str | None) -> str:
    """The clauses joined with ``and``; empty ones are left out."""
    return " and ".join(c for c in clauses if c)


def search_all_runs(client: Any, experiment_ids: Sequence[str], filter_string: str = "",
                    order_by: Sequence[str] = ("attributes.start_time ASC",)) -> list[Any]:
    """All active runs of ``experiment_ids`` matching ``filter_string``, oldest first, following every page."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(list(experiment_ids), filter_string=filter_string, max_results=SEARCH_PAGE,
                                  order_by=list(order_by), page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def all_experiment_ids(client: Any) -> list[str]:
    """The ids of every active experiment, following every page."""
    ids: list[str] = []
    token = None
    while True:
        page = client.search_experiments(max_results=SEARCH_PAGE, page_token=token)
        ids.extend(e.experiment_id for e in page)
        token = page.token
        if not token:
            return ids
