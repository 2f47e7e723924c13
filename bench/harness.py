"""Shared by the benchmarks: interleaved repetitions, medians, ratios, and the JSON and PNG each one saves.

Every benchmark measures its variants side by side in one run: repetition r runs every variant once, in an
order rotated by r, so drift on a noisy machine (CPU frequency, other load) hits all variants alike. Figures are
medians over the repetitions; a ratio is the median of the repetitions' own ratios (``paired``), each between
variants that ran back to back, and is reported with that spread, so a run on a noisy machine shows as one.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def arguments(
    doc: str, argv: list[str] | None, repetitions: int = 5, **options: tuple[type, Any, str]
) -> argparse.Namespace:
    """The command line every benchmark shares (``--repetitions``, default ``repetitions``; ``--smoke``;
    ``--out``) plus its own ``options`` (name: (type, default, help))."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, (kind, default, text) in options.items():
        parser.add_argument(f"--{name}", type=kind, default=default, help=text)
    parser.add_argument("--repetitions", type=int, default=repetitions, help=f"at least 5 (default {repetitions})")
    parser.add_argument("--smoke", action="store_true", help="a quick run that checks the harness, not the speed")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def interleaved(
    variants: Mapping[str, Callable[[], dict[str, float]]], repetitions: int, label: str = ""
) -> dict[str, list[dict[str, float]]]:
    """Run each variant ``repetitions`` times, rotating the order; returns every measurement per variant."""
    names = list(variants)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    total = repetitions * len(names)
    done = 0
    for rep in range(repetitions):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            runs[name].append(variants[name]())
            done += 1
            print(f"\r{label} {done}/{total} runs", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return runs


def medians(runs: Mapping[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """The median of every figure of every variant."""
    return {
        name: {key: statistics.median(m[key] for m in measurements) for key in measurements[0]}
        for name, measurements in runs.items()
        if measurements
    }


def paired(
    runs: Mapping[str, list[dict[str, float]]],
    variant: str,
    baseline: str,
    figure: str,
    compare: Callable[[float, float], float] = lambda a, b: a / b,
) -> dict[str, Any]:
    """``compare(variant, baseline)`` of one figure, repetition by repetition: their median and every value."""
    values = [compare(a[figure], b[figure]) for a, b in zip(runs[variant], runs[baseline], strict=True)]
    return {"median": statistics.median(values), "per_repetition": values}


def alternating(a: Callable[[], object], b: Callable[[], object], blocks: int = 200, calls: int = 50) -> float:
    """``a``'s time over ``b``'s, from ``blocks`` pairs of back-to-back blocks of ``calls`` calls each, which of the
    two goes first swapped every pair: the median of the pairs' ratios.

    Both sides of a pair run within milliseconds of each other, so they see the machine alike; timing sessions
    that run one variant after the other, seconds apart, see it change (on the 2-core machine of ``bench/results``
    their ratios swung from 0.6 to 1.7 where these stay within a few percent).
    """
    clock = time.perf_counter
    ratios = []
    for pair in range(blocks):
        elapsed = {}
        for side, fn in ((0, a), (1, b)) if pair % 2 == 0 else ((1, b), (0, a)):
            start = clock()
            for _ in range(calls):
                fn()
            elapsed[side] = clock() - start
        ratios.append(elapsed[0] / elapsed[1])
    return statistics.median(ratios)


def ratio_line(name: str, r: Mapping[str, Any], note: str = "") -> str:
    """The printed summary of a ratio: its median, its goal if it has one, and its spread."""
    goal = f" (goal <= {r['goal']:.2f}: {'met' if r['met'] else 'NOT met'})" if r.get("goal") else ""
    return f"{name}: {r['ratio']:.2f}x{goal} ({spread(r['per_repetition'])} repetitions{note})"


def spread(values: list[float], form: str = ".2f") -> str:
    """``min to max over n`` of per-repetition values, for the printed summary."""
    return f"{min(values):{form}} to {max(values):{form}} over {len(values)}"


def save(name: str, result: dict[str, Any], plot: Callable[[Any], None] | None = None, out: Path = RESULTS) -> Path:
    """Write ``<name>.json`` (with the machine it ran on) and, given a plot function, ``<name>.png``."""
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpus": _cpus(), "platform": platform.platform()},
        **result,
    }
    path = out / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5))
        plot(ax)
        ax.set_title(name.replace("_", " "))
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)
    return path


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def bar_plot(ax: Any, groups: Mapping[str, Mapping[str, float]], ylabel: str) -> None:
    """Grouped bars: one group per outer key, one bar per inner key."""
    outer = list(groups)
    inner = list(next(iter(groups.values())))
    width = 0.8 / len(inner)
    for i, key in enumerate(inner):
        xs = [g + i * width for g in range(len(outer))]
        ax.bar(xs, [groups[o][key] for o in outer], width, label=key)
    ax.set_xticks([g + width * (len(inner) - 1) / 2 for g in range(len(outer))], outer)
    ax.set_ylabel(ylabel)
    ax.legend()
