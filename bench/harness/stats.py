"""Statistics of the benchmark report: the median of the repetitions with a 95 % interval, and the
conservative bound of a ratio (Switchyard's worst repetition against due's best), and the paired bound
(the worst of the per-repetition ratios).

The interval for the median is the distribution-free one from order statistics: with n repetitions
sorted, [x_(l), x_(u)] holds the true median with probability at least 95 % where l and u are the
binomial(n, ½) quantiles. It needs n >= 6 to reach 95 % at all (with n = 5 the widest, min to max,
covers 93.75 %); for smaller n the report shows min–max and states the coverage it actually has.
"""

from __future__ import annotations

import math
import statistics


def median(values):
    return statistics.median(values) if values else None


def _binom_cdf(k: int, n: int) -> float:
    return sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n


def median_interval(values, level: float = 0.95):
    """(low, high, coverage): order-statistic interval for the median of `values`.

    The narrowest symmetric pair of order statistics whose coverage is at least `level`; with too few
    values for that, min and max and the coverage they give (1 - 2 / 2^n).
    """
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        return None, None, 0.0
    if n == 1:
        return xs[0], xs[0], 0.0
    best = (xs[0], xs[-1], 1 - 2 * 0.5 ** n)
    # [x_(j+1), x_(n-j)] (1-based ranks) misses the median only if at most j values fall on one side:
    # coverage 1 - 2·P(Bin(n, ½) <= j). Widen j while the coverage stays at or above the level.
    for j in range(1, n // 2):
        coverage = 1 - 2 * _binom_cdf(j, n)
        if coverage < level:
            break
        best = (xs[j], xs[n - j - 1], coverage)
    return best


def conservative_ratio(ours, theirs, higher_is_better: bool = True):
    """Our worst repetition against their best: min/max for throughput, max/min for costs."""
    if not ours or not theirs:
        return None
    if higher_is_better:
        return min(ours) / max(theirs) if max(theirs) else None
    return max(ours) / min(theirs) if min(theirs) else None


def paired_ratio(ours_by_rep, theirs_by_rep, higher_is_better: bool = True):
    """The worst of the per-repetition ratios, over the repetitions both sides finished.

    Repetitions are interleaved (every system runs once per repetition, minutes apart), so a drift of the
    machine between repetitions moves both sides of a repetition's ratio alike and cancels here, where the
    conservative bound counts it against us. Reported next to that bound, never instead of it.
    """
    reps = sorted(set(ours_by_rep) & set(theirs_by_rep))
    ratios = [ours_by_rep[r] / theirs_by_rep[r] for r in reps if theirs_by_rep[r]]
    if not ratios:
        return None
    return min(ratios) if higher_is_better else max(ratios)
