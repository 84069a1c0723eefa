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
    if not index_file.is_file():
        return []
    sections = []
    for entry in json.loads(index_file.read_text()):
        columns = int(entry.get("index_columns", 0))
        path = folder / "summary" / f"{entry['name']}.csv"
        if path.is_file():
            frame = pd.read_csv(path, index_col=list(range(columns)) if columns else None)
            sections.append((str(entry["title"]), frame))
    return sections


def markdown_summary(run_dir: Path) -> str:
    """A short section per analysis for ``leaderboard.md``."""
    from sweeper.evaluation.leaderboard import frame_markdown

    return "\n\n".join(f"## {title}\n\n{frame_markdown(frame)}" for title, frame in summary_tables(run_dir))
