"""The analyses a finished run wrote (``<run>/analyses/``), read back for ``leaderboard.md`` and
``report.html``: each table's title and the summary a person reads (the full tables stay in
``analyses/<name>.csv``). Reads the run folder only."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def summary_tables(run_dir: Path) -> list[tuple[str, pd.DataFrame]]:
    """``(title, summary)`` per analysis, in the order the run wrote them (none when it wrote none)."""
    folder = Path(run_dir) / "analyses"
    index_file = folder / "index.json"
    sections = external_cohorts(run_dir)
    for entry in json.loads(index_file.read_text()) if index_file.is_file() else []:
        columns = int(entry.get("index_columns", 0))
        path = folder / "summary" / f"{entry['name']}.csv"
        if path.is_file():
            frame = pd.read_csv(path, index_col=list(range(columns)) if columns else None)
            sections.append((str(entry["title"]), frame))
    return sections


def external_cohorts(run_dir: Path) -> list[tuple[str, pd.DataFrame]]:
    """What each external cohort (``<run>/external/<name>.json``, written before the trials ran) lacks
    of what the models read: one row per cohort, lists joined."""
    rows = []
    for path in sorted((Path(run_dir) / "external").glob("*.json")):
        report = json.loads(path.read_text())
        shown = {k: (", ".join(map(str, v)) if isinstance(v, list) else "; ".join(f"{a}: {b}" for a, b in v.items()) if isinstance(v, dict) else v)
                 for k, v in report.items() if k != "stays"}
        rows.append({"cohort": f"ext_{path.stem}", **{k: (v if v != "" else "none") for k, v in shown.items()}})
    return [("External cohorts: what each lacks of what the models read (absent, never zero-filled)", pd.DataFrame(rows).set_index("cohort"))] if rows else []


def markdown_summary(run_dir: Path) -> str:
    """A short section per analysis for ``leaderboard.md``."""
    from sweeper.evaluation.leaderboard import frame_markdown

    return "\n\n".join(f"## {title}\n\n{frame_markdown(frame)}" for title, frame in summary_tables(run_dir))
