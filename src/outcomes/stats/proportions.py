"""Proportions: Wilson and Newcombe intervals, clustering (design effect, the Wilson
interval at the effective size) and Benjamini–Hochberg q-values."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from outcomes.stats.common import _as_float, _check_counts, _out, _z

# --------------------------------------------------------------------------- Wilson


def _wilson(k: np.ndarray, n: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        z2 = z * z
        denom = n + z2
        centre = (k + z2 / 2.0) / denom
        half = z / denom * np.sqrt(k * (n - k) / n + z2 / 4.0)
        low = np.clip(centre - half, 0.0, 1.0)
        high = np.clip(centre + half, 0.0, 1.0)
    # The bounds at k = 0 and k = n are exactly 0 and 1 in exact arithmetic;
    # remove rounding noise so "0 of 20" prints as 0, not 1e-17.
    low = np.where(k == 0, 0.0, low)
    high = np.where(k == n, 1.0, high)
    empty = ~(n > 0)  # n == 0 or nan
    low = np.where(empty, np.nan, low)
    high = np.where(empty, np.nan, high)
    return low, high


def wilson_ci(
    successes: ArrayLike, n: ArrayLike, level: float = 0.95
) -> tuple[Any, Any]:
    """Wilson score interval for a binomial proportion (no continuity correction).

    Why Wilson: unlike the Wald interval it never leaves [0, 1], is not
    degenerate at 0 or n successes, and has coverage close to nominal for the
    small denominators typical of per-clinician audit cells (Newcombe RG 1998,
    Stat Med 17:857-872, method 3).

    ``successes`` and ``n`` may be scalars or array-likes (broadcast together);
    scalars give ``(low, high)`` floats, arrays give two float arrays.
    ``n == 0`` (or a missing value) gives ``(nan, nan)``.
    """
    z = _z(level)
    k_arr, n_arr = np.broadcast_arrays(_as_float(successes), _as_float(n))
    _check_counts(k_arr, n_arr, "wilson_ci")
    low, high = _wilson(k_arr, n_arr, z)
    return _out(k_arr.ndim == 0, low, high)


# --------------------------------------------------------------------------- Newcombe


def newcombe_diff_ci(
    k1: ArrayLike, n1: ArrayLike, k2: ArrayLike, n2: ArrayLike, level: float = 0.95
) -> tuple[Any, Any]:
    """Newcombe hybrid score interval for the difference p1 - p2.

    Method 10 of Newcombe RG (1998) "Interval estimation for the difference
    between independent proportions: comparison of eleven methods", Stat Med
    17:873-890. With Wilson limits (l1, u1) and (l2, u2) and d = p1 - p2::

        low  = d - sqrt((p1 - l1)^2 + (u2 - p2)^2)
        high = d + sqrt((u1 - p1)^2 + (p2 - l2)^2)

    Why: closed form, no aberrations at 0 or n, near-nominal coverage; used to
    compare compliance between periods or groups. Vectorised like
    :func:`wilson_ci`; a zero denominator gives ``(nan, nan)``.
    """
    z = _z(level)
    a1, b1, a2, b2 = np.broadcast_arrays(
        _as_float(k1), _as_float(n1), _as_float(k2), _as_float(n2)
    )
    _check_counts(a1, b1, "newcombe_diff_ci (group 1)")
    _check_counts(a2, b2, "newcombe_diff_ci (group 2)")
    l1, u1 = _wilson(a1, b1, z)
    l2, u2 = _wilson(a2, b2, z)
    with np.errstate(invalid="ignore", divide="ignore"):
        p1 = a1 / b1
        p2 = a2 / b2
        d = p1 - p2
        low = d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
        high = d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    # Mathematically within [-1, 1]; clip rounding noise only.
    low = np.clip(low, -1.0, 1.0)
    high = np.clip(high, -1.0, 1.0)
    return _out(a1.ndim == 0, low, high)



# --------------------------------------------------------------------------- clustering


def design_effect(successes: ArrayLike, n: ArrayLike) -> float:
    """Design effect of a proportion estimated from clusters (e.g. sessions per patient).

    With per-cluster successes ``x_i`` and trials ``n_i`` (i = 1..k clusters),
    ``N = sum(n_i)`` and the ratio estimator ``p = sum(x_i) / N``::

        Var_cluster = k / (k - 1) * sum((x_i - p * n_i) ** 2) / N ** 2
        deff        = Var_cluster / (p * (1 - p) / N)

    ``Var_cluster`` is the linearisation (Taylor-series) variance of a ratio
    estimator with clusters treated as sampled with replacement (Cochran WG,
    Sampling Techniques, 3rd ed., 1977, chapter 6 on ratio estimators; Kish L,
    Survey Sampling, 1965); ``deff`` is Kish's design effect, the
    variance relative to simple random sampling of N sessions. It equals the
    square of the cluster-robust (CR1) standard error of an intercept-only
    regression divided by the square of its HC0 standard error.

    Edge cases (chosen and tested):

    * clusters with ``n_i == 0`` or a missing count carry no information and
      are dropped before k is counted;
    * fewer than 2 clusters: ``nan`` (a between-cluster variance cannot be
      estimated from one cluster);
    * ``p`` of exactly 0 or 1 (with k >= 2): ``1.0``. Every session agrees, so
      both variances are 0 and the ratio is 0/0; 1.0 means "no inflation", so
      a clustered interval falls back to the plain Wilson one, which is still
      informative at 0 of N and N of N.

    Values below 1 (less variation between clusters than binomial) are
    returned as computed; :func:`wilson_ci_clustered` uses ``max(deff, 1)``.
    Note that even with clusters of size 1 the estimator gives k / (k - 1),
    not exactly 1, because of the with-replacement factor.
    """
    x = _as_float(successes).ravel()
    m = _as_float(n).ravel()
    if x.shape != m.shape:
        raise ValueError("design_effect: successes and n must have the same length")
    _check_counts(x, m, "design_effect")
    keep = (m > 0) & ~np.isnan(x)
    x, m = x[keep], m[keep]
    k = x.size
    if k < 2:
        return float("nan")
    total = m.sum()
    p = x.sum() / total
    if p <= 0.0 or p >= 1.0:
        return 1.0
    var_cluster = k / (k - 1.0) * np.sum((x - p * m) ** 2) / total**2
    return float(var_cluster / (p * (1.0 - p) / total))


def wilson_ci_clustered(
    successes: ArrayLike, n_total: ArrayLike, deff: ArrayLike, level: float = 0.95
) -> tuple[Any, Any]:
    """Wilson interval for clustered data, at the effective sample size.

    The Wilson score interval (see :func:`wilson_ci`) computed with both the
    number of successes and the number of trials divided by ``max(deff, 1)``,
    i.e. at the effective size ``N / max(deff, 1)`` and the same proportion
    (Kish's effective sample size, Kish L, Survey Sampling, 1965; the same
    substitution Korn EL and Graubard BI (1998, Survey Methodology 24:193-201)
    make in the Clopper-Pearson interval).

    Because the Wilson interval is the set of p with
    ``n (p_hat - p)^2 <= z^2 p (1 - p)``, a smaller n gives a superset: the
    clustered interval always contains the plain one and is never narrower.
    ``deff`` below 1 is treated as 1 (no credit for clustering); a missing
    ``deff`` (e.g. :func:`design_effect` of a single cluster) gives
    ``(nan, nan)``, as does ``n_total == 0``. Vectorised like
    :func:`wilson_ci`.
    """
    z = _z(level)
    k_arr, n_arr, d_arr = np.broadcast_arrays(
        _as_float(successes), _as_float(n_total), _as_float(deff)
    )
    _check_counts(k_arr, n_arr, "wilson_ci_clustered")
    with np.errstate(invalid="ignore"):
        if np.any(d_arr < 0):
            raise ValueError("wilson_ci_clustered: deff must be >= 0")
    factor = np.maximum(d_arr, 1.0)  # nan propagates
    low, high = _wilson(k_arr / factor, n_arr / factor, z)
    return _out(k_arr.ndim == 0, low, high)



# --------------------------------------------------------------------------- multiplicity


def bh_qvalues(p: ArrayLike) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values ("q-values"), missing-value aware.

    Benjamini Y, Hochberg Y (1995) "Controlling the false discovery rate",
    J R Stat Soc B 57:289-300, step-up procedure as adjusted p-values (R's
    ``p.adjust(method = "BH")``): with the m non-missing p-values sorted,
    ``p_(1) <= ... <= p_(m)``::

        q_(i) = min(1, min_{j >= i} m * p_(j) / j)

    Rejecting every hypothesis with ``q <= alpha`` controls the false
    discovery rate at alpha. ``nan`` (a test that could not be done) stays
    ``nan`` and does not count in m. Returns a float array of the input's
    shape; p-values outside [0, 1] raise ``ValueError``.
    """
    a = _as_float(p)
    flat = a.ravel()
    ok = ~np.isnan(flat)
    pv = flat[ok]
    if np.any((pv < 0) | (pv > 1)):
        raise ValueError("bh_qvalues: p-values must lie in [0, 1]")
    out = np.full(flat.shape, np.nan)
    m = pv.size
    if m:
        order = np.argsort(pv, kind="stable")
        scaled = pv[order] * m / np.arange(1, m + 1)
        q = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
        back = np.empty(m)
        back[order] = q
        out[ok] = back
    return out.reshape(a.shape)
