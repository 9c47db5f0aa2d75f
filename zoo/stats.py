"""Statistics for comparing training runs over seeds: mean ± std, Welch's t-test, and the
percentages the experiments' tables print.

No SciPy: Student's t p-values come from the regularized incomplete beta function, checked
against reference values in the tests.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["mean_std", "percent", "welch_t_test"]


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), by its continued fraction.

    The continued fraction (Numerical Recipes §6.4, evaluated with the modified Lentz
    method) converges quickly for x < (a + 1) / (a + b + 2); otherwise the symmetry
    I_x(a, b) = 1 − I_{1−x}(b, a) is used. Accurate to about 1e-12 here.
    """
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = a * math.log(x) + b * math.log1p(-x) - math.log(a)
    log_front -= math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return math.exp(log_front) * h


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> dict:
    """Welch's unequal-variances t-test of mean(a) = mean(b), two-sided.

    ``t = (mean a − mean b) / sqrt(s_a²/n_a + s_b²/n_b)`` with the Welch–Satterthwaite degrees
    of freedom ``ν``; the p-value is ``P(|T_ν| >= |t|) = I_{ν/(ν+t²)}(ν/2, 1/2)`` for Student's
    t distribution, computed with the regularized incomplete beta function (no SciPy).

    Returns:
        ``{"difference", "t", "df", "p"}``; ``t``, ``df`` and ``p`` are None when they are
        undefined (fewer than 2 values in an arm, or no variance in either).
    """
    a, b = [float(v) for v in a], [float(v) for v in b]
    difference = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return {"difference": difference, "t": None, "df": None, "p": None}
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0.0:
        return {"difference": difference, "t": None, "df": None, "p": None}
    t = difference / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    p = _betainc(df / 2.0, 0.5, df / (df + t * t))
    return {"difference": difference, "t": t, "df": df, "p": p}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def percent(value: float | None, std: float | None = None, *, missing: str = "-") -> str:
    """A fraction as a percentage with two decimals, ``"91.20 ± 0.31"`` with a standard
    deviation (also a fraction); ``missing`` for a value of None."""
    if value is None:
        return missing
    return f"{100 * value:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")
