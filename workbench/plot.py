"""`workbench plot`: one picture per scenario, one panel per arm, from the logs alone.

Each panel is one run (the lowest seed, or --seed): free memory against virtual time
(the `meminfo` samples), the zone's min, low and high watermarks, the allocation
stalls shaded (darker where a stall reached limits.stall), and markers where the
OOM killer killed, the reaper reaped, gave up or dropped an mm.  A memcg scenario
gets a second column: each cgroup's usage against its memory_max.  matplotlib
comes with the `plot` extra (pip install 'oom-workbench[plot]').
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.logs import RunLog

MARKERS = {  # event -> (label, marker, colour): what the kernel did, on the free-memory axis
    "kill": ("kill", "v", "tab:red"),
    "reap_done": ("reap", "o", "tab:green"),
    "reap_give_up": ("reaper gave up", "x", "black"),
    "reaper_dropped": ("mm dropped", "s", "tab:orange"),
}


def need_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError("matplotlib is not installed: pip install 'oom-workbench[plot]' "
                          "(or pip install matplotlib)") from None
    matplotlib.use("Agg")            # files only, no display
    import matplotlib.pyplot as plt
    return plt


def plot_run_dir(runs: list[RunLog], out_dir: Path, fmt: str = "png",
                 seed: int | None = None) -> list[Path]:
    """One file per scenario in out_dir; returns their paths."""
    plt = need_matplotlib()
    chosen: dict[str, dict[str, RunLog]] = {}
    for run in sorted(runs, key=lambda r: (r.scenario, r.arm, r.seed)):
        if seed is None or run.seed == seed:
            chosen.setdefault(run.scenario, {}).setdefault(run.arm, run)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for scenario, by_arm in chosen.items():
        path = out_dir / f"{scenario}.{fmt}"
        _figure(plt, scenario, list(by_arm.values())).savefig(path, format=fmt)
        plt.close("all")
        written.append(path)
    return written


def _figure(plt: Any, scenario: str, runs: list[RunLog]) -> Any:
    memcg = any(r.events[0]["config"]["scenario"].get("cgroups") for r in runs)
    cols = 2 if memcg else 1
    fig, axes = plt.subplots(len(runs), cols, figsize=(11 if memcg else 8, 2.6 * len(runs)),
                             sharex=True, squeeze=False)
    for row, run in enumerate(runs):
        _memory(axes[row][0], run)
        if memcg:
            _cgroups(axes[row][1], run)
    axes[-1][0].set_xlabel("virtual time (s)")
    if memcg:
        axes[-1][1].set_xlabel("virtual time (s)")
    # One legend for the figure: what any panel shows, each once.
    legend: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.suptitle(f"{scenario} (seed {runs[0].seed})")
    fig.legend(list(legend.values()), list(legend.keys()), loc="lower center",
               ncol=min(len(legend), 5), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(legend) > 5), 1, 1))
    return fig


def _memory(ax: Any, run: RunLog) -> None:
    config = run.events[0]["config"]
    end = run.events[-1]["t"]
    samples = [(e["t"], e["free_kb"] / 1024) for e in run.events if e["event"] == "meminfo"]
    if samples:
        ax.step([t for t, _ in samples] + [end], [m for _, m in samples] + [samples[-1][1]],
                where="post", color="tab:blue", label="free memory")
    zone = config.get("zone", {})
    for mark, style in (("min_kb", ":"), ("low_kb", "--"), ("high_kb", "-.")):
        if mark in zone:
            ax.axhline(zone[mark] / 1024, color="grey", linestyle=style, linewidth=0.8,
                       label=f"{mark[:-3]} watermark")
    stall_limit = config["limits"]["stall_s"]
    for e in run.events:
        if e["event"] == "alloc_stall" and e["stall_s"] > 0:
            long = e["stall_s"] >= stall_limit
            ax.axvspan(e["since"], e["t"], color="tab:red", alpha=0.25 if long else 0.08,
                       linewidth=0)
    top = max((m for _, m in samples), default=1)
    for event, (label, marker, colour) in MARKERS.items():
        times = [e["t"] for e in run.events if e["event"] == event]
        if times:
            ax.plot(times, [top * 1.05] * len(times), linestyle="none", marker=marker,
                    color=colour, label=label)
    s = run.summary
    ax.set_title(f"{run.arm}: {s['outcome']}, {s['kills']} kill(s)", loc="left", fontsize=10)
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)


def _cgroups(ax: Any, run: RunLog) -> None:
    limits = {c["name"]: c["memory_max"] * 4 / 1024
              for c in run.events[0]["config"]["scenario"].get("cgroups", [])}
    samples = [(e["t"], e.get("cgroups", {})) for e in run.events if e["event"] == "meminfo"]
    end = run.events[-1]["t"]
    for i, (name, limit) in enumerate(sorted(limits.items())):
        colour = f"C{i}"
        usage = [u.get(name, 0) / 1024 for _, u in samples]
        ax.step([t for t, _ in samples] + [end], usage + usage[-1:], where="post",
                color=colour, label=f"{name} usage")
        ax.axhline(limit, color=colour, linestyle="--", linewidth=0.8)
    ax.set_title(f"{run.arm}: cgroups (dashed: memory_max)", loc="left", fontsize=10)
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
