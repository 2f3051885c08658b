#!/usr/bin/python3
"""Draws the benchmark chart: each measure through containerd 2.1 (ctr, and Kubernetes' CRI) relative
to containerd's runc shim with runc (1.0, lower is better), for myshim and for crun (ctr only).

  bench-chart.py results.json chart.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    results = json.load(open(sys.argv[1]))
    burst = results["containerd"]["myshim"]["burst"]
    density = results["cri"]["myshim"]["density"]
    measures = [
        ("ctr run --rm true", "containerd", "ctr_run_ms"),
        ("ctr task exec true", "containerd", "ctr_exec_ms"),
        (f"{burst} started\nat once", "containerd", "burst_start_ms"),
        (f"{burst} torn down\nat once", "containerd", "burst_teardown_ms"),
        ("shim RSS,\none container", "containerd", "shim_rss_kib"),
        ("CRI pod start\np50", "cri", "pod_start_p50_ms"),
        ("CRI pod start\np99, 10 at once", "cri", "pod_start_concurrent_p99_ms"),
        ("CRI ExecSync", "cri", "exec_sync_p50_ms"),
        (f"CRI PSS,\n{density} pods", "cri", "density_pss_kib"),
    ]
    labels = [label for label, _, _ in measures]
    width = 0.38
    fig, ax = plt.subplots(figsize=(12, 4.6), dpi=110)
    for offset, runtime, colour in [(-width / 2, "myshim", "#2a7ab0"), (width / 2, "crun", "#a0a0a0")]:
        ratios = []
        for _, section, key in measures:
            mine, runc = results[section].get(runtime, {}).get(key), results[section]["runc"].get(key)
            ratios.append(mine / runc if mine and runc else 0)
        bars = ax.bar([i + offset for i in range(len(measures))], ratios, width, label=runtime, color=colour)
        for bar, ratio in zip(bars, ratios):
            if ratio:
                ax.annotate(f"{ratio:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    ax.axhline(1.0, color="#c04040", linewidth=1, label="runc (containerd's runc shim) = 1")
    ax.set_xticks(range(len(measures)), labels, fontsize=7)
    ax.set_ylabel("relative to runc (lower is better)")
    ax.set_title(f"containerd 2.1 on {results['environment']['cpus']} CPUs, {results['environment']['date']}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(sys.argv[2])


if __name__ == "__main__":
    main()
