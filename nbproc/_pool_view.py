"""How a pool shows itself: an HTML table for notebooks and a text block for terminals.

Both render a :class:`nbproc.progress.PoolStatistics` snapshot, so a ``Pool`` in a cell's last
line, ``IPython.display.display(pool)`` and ``%parallel --status`` all show the same view.
Plain strings only: nothing here imports IPython.
"""

from __future__ import annotations

from html import escape

from .progress import PoolStatistics

__all__ = ["stats_html", "stats_text"]

#: Colours of worker states in the HTML view (the JupyterLab palette's green/amber/grey).
_STATE_COLOURS = {"busy": "#2e7d32", "running": "#2e7d32", "starting": "#f9a825", "idle": "#757575"}


def _summary(stats: PoolStatistics) -> str:
    return (
        f"{stats.name} ({stats.start_method}, {stats.processes} workers, {stats.state}): "
        f"{stats.queued} queued, {stats.running} running, {stats.done} done, {stats.failed} failed"
    )


def stats_text(stats: PoolStatistics) -> str:
    """One summary line, then one line per worker."""
    lines = [_summary(stats)]
    for w in stats.workers:
        lines.append(f"  pid {w.pid}: {w.state}, {'alive' if w.alive else 'dead'}, {w.tasks_done} tasks done")
    return "\n".join(lines)


def stats_html(stats: PoolStatistics) -> str:
    """A compact table; plain HTML and inline styles, so it renders the same in a saved notebook."""
    rows = "".join(
        "<tr>"
        f"<td>{w.pid}</td>"
        f'<td style="color:{_STATE_COLOURS.get(w.state, "#000")}">{escape(w.state)}</td>'
        f"<td>{'yes' if w.alive else 'no'}</td>"
        f"<td>{w.tasks_done}</td>"
        "</tr>"
        for w in stats.workers
    )
    return (
        '<div class="nbproc-pool">'
        f"<b>{escape(stats.name)}</b> &mdash; start method <code>{escape(stats.start_method)}</code>, "
        f"{stats.processes} workers, state {escape(stats.state)}<br>"
        f"tasks: {stats.queued} queued, {stats.running} running, {stats.done} done, {stats.failed} failed"
        f"{f', {stats.jobs} calls outstanding' if stats.jobs else ''}"
        '<table style="margin-top:4px"><thead><tr><th>pid</th><th>state</th><th>alive</th><th>tasks done</th></tr>'
        f"</thead><tbody>{rows}</tbody></table></div>"
    )
