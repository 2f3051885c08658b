#!/usr/bin/python3
"""Draws the benchmark chart: each measure through containerd 2.1 relative to containerd's runc shim
with runc (1.0, lower is better), for myshim and for crun.

  bench-chart.py results.json chart.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    results = json.load(open(sys.argv[1]))
    c = results["containerd"]
    burst = c["myshim"]["burst"]
    measures = [
        ("ctr run --rm true", "ctr_run_ms"),
        ("ctr task exec true", "ctr_exec_ms"),
        (f"{burst} started at once", "burst_start_ms"),
        (f"{burst} torn down at once", "burst_teardown_ms"),
        ("shim RSS, one container", "shim_rss_kib"),
    ]
    labels = [label for label, _ in measures]
    width = 0.38
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=110)
    for offset, runtime, colour in [(-width / 2, "myshim", "#2a7ab0"), (width / 2, "crun", "#a0a0a0")]:
        ratios = []
        for _, key in measures:
            mine, runc = c[runtime].get(key), c["runc"].get(key)
            ratios.append(mine / runc if mine and runc else 0)
        bars = ax.bar([i + offset for i in range(len(measures))], ratios, width, label=runtime, color=colour)
        for bar, ratio in zip(bars, ratios):
            if ratio:
                ax.annotate(f"{ratio:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    ax.axhline(1.0, color="#c04040", linewidth=1, label="runc (containerd's runc shim) = 1")
    ax.set_xticks(range(len(measures)), labels, fontsize=8)
    ax.set_ylabel("relative to runc (lower is better)")
    ax.set_title(f"containerd 2.1 on {results['environment']['cpus']} CPUs, {results['environment']['date']}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(sys.argv[2])


if __name__ == "__main__":
    main()
