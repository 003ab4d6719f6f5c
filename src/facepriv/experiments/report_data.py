"""What a run report holds, shared by the Markdown (:mod:`.report`) and HTML (:mod:`.report_html`) writers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    """A plot or image of the report."""

    title: str
    path: Path  # absolute
    caption: str = ""


@dataclass
class ReportData:
    """Everything the Markdown and HTML writers need."""

    run_dir: Path
    metrics: dict[str, Any]
    config_text: str
    env: dict[str, Any]
    tables: dict[str, tuple[list[str], list[list[str]]]] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)


def headline_names(metrics: dict[str, Any]) -> dict[str, str]:
    """Attack label -> the name of its headline metric (from the first cell that has one)."""
    names: dict[str, str] = {}
    for m in metrics.get("models", {}).values():
        for p in m.get("protections", {}).values():
            for a, c in p.get("attacks", {}).items():
                h = (c or {}).get("headline") or {}
                if h.get("metric") and a not in names:
                    names[a] = h["metric"]
    return names
