"""The benchmarks' ratios: repetition by repetition, or block by block, so a machine that slows down half-way does
not halve them."""

from __future__ import annotations

import pytest

from bench import harness
from bench.harness import alternating, paired, spread


def _runs(baseline: list[float], variant: list[float]) -> dict[str, list[dict[str, float]]]:
    return {"bare": [{"rps": v} for v in baseline], "kit": [{"rps": v} for v in variant]}


def test_a_slowdown_from_the_third_repetition_on_leaves_the_ratio_alone() -> None:
    # the machine halves its speed from the third repetition on, just after bare ran in it: the medians alone
    # (45 / 100) would report 0.45; each repetition's own ratio is 0.9 but the third
    runs = _runs([100, 100, 100, 50, 50], [90, 90, 45, 45, 45])
    ratio = paired(runs, "kit", "bare", "rps")
    assert ratio["per_repetition"] == [0.9, 0.9, 0.45, 0.9, 0.9]
    assert ratio["median"] == 0.9
    assert spread(ratio["per_repetition"]) == "0.45 to 0.90 over 5"


def test_microseconds_added_are_compared_repetition_by_repetition() -> None:
    runs = _runs([500, 400], [400, 320])
    added = paired(runs, "kit", "bare", "rps", lambda rps, bare: 1e6 / rps - 1e6 / bare)
    assert added["per_repetition"] == pytest.approx([500.0, 625.0])


def test_variants_with_different_repetition_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        paired(_runs([100, 100], [90]), "kit", "bare", "rps")


def test_alternating_blocks_keep_the_ratio_when_the_machine_slows_down(monkeypatch: pytest.MonkeyPatch) -> None:
    # a costs twice b; a third of the way in, the machine becomes three times slower for both
    now, done = [0.0], [0]
    monkeypatch.setattr(harness.time, "perf_counter", lambda: now[0])

    def work(cost: float) -> object:
        def call() -> None:
            done[0] += 1
            now[0] += cost * (3.0 if done[0] > 200 else 1.0)

        return call

    assert alternating(work(2.0), work(1.0), blocks=30, calls=10) == pytest.approx(2.0)
    assert done[0] == 600
    # timed one after the other instead, a's 300 calls before b's, it would read (200 * 2 + 100 * 6) / (300 * 3) = 1.11
