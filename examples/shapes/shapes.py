"""Procedural 32x32 shape images in two styles, pure numpy.

Every class is described by a closed polygon in unit coordinates (largest extent
about 1).  An image is rendered by placing the polygon with a random position,
scale and rotation, computing the signed distance of each pixel centre to the
polygon outline, and turning that distance into an anti-aliased intensity:

* ``"filled"`` ("photos"): the interior is filled,
* ``"sketch"``: only the outline is drawn, with a stroke of 1-2.5 px and a
  little smooth jitter of the outline.

Random foreground/background brightness and mild Gaussian pixel noise are added.
Everything is deterministic given the ``numpy.random.Generator`` (``render``) or
the seed (``make_split``).
"""

from __future__ import annotations

import numpy as np

SIZE = 32
STYLES = ("filled", "sketch")

CLASSES: list[str] = [
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "hexagon",
    "ellipse",
    "crescent",
    "arrow",
    "heart",
    "semicircle",
    "lshape",
]


# ---------------------------------------------------------------------------
# unit polygons (counter-clockwise or clockwise does not matter: even-odd fill)


def _regular(n: int, phase: float = 0.0) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(t), np.sin(t)], 1)


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    t = np.pi / 2 + np.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _cross(arm: float = 0.34) -> np.ndarray:
    a = arm
    return np.array(
        [
            [a, 1],
            [-a, 1],
            [-a, a],
            [-1, a],
            [-1, -a],
            [-a, -a],
            [-a, -1],
            [a, -1],
            [a, -a],
            [1, -a],
            [1, a],
            [a, a],
        ],
        dtype=float,
    )


def _ellipse(aspect: float, n: int = 64) -> np.ndarray:
    t = 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(t), aspect * np.sin(t)], 1)


def _crescent(n: int = 48) -> np.ndarray:
    # outer unit circle minus an inner circle of radius r2 centred at (d, 0)
    d, r2 = 0.5, 0.85
    xi = (1 - r2**2 + d**2) / (2 * d)
    yi = np.sqrt(1 - xi**2)
    a0 = np.arctan2(yi, xi)
    outer = np.linspace(a0, 2 * np.pi - a0, n)
    b0 = np.arctan2(yi, xi - d)  # angle of the upper intersection seen from inner centre
    inner = np.linspace(2 * np.pi - b0, b0, n)[1:-1]
    pts_o = np.stack([np.cos(outer), np.sin(outer)], 1)
    pts_i = np.stack([d + r2 * np.cos(inner), r2 * np.sin(inner)], 1)
    pts = np.concatenate([pts_o, pts_i])
    return pts - np.array([(pts[:, 0].min() + pts[:, 0].max()) / 2, 0.0])


def _arrow() -> np.ndarray:
    return np.array(
        [
            [1.0, 0.0],
            [0.1, 0.75],
            [0.1, 0.28],
            [-1.0, 0.28],
            [-1.0, -0.28],
            [0.1, -0.28],
            [0.1, -0.75],
        ],
        dtype=float,
    )


def _heart(n: int = 64) -> np.ndarray:
    t = 2 * np.pi * np.arange(n) / n
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    pts = np.stack([x, y], 1)
    pts -= (pts.min(0) + pts.max(0)) / 2
    return pts / 17.0


def _semicircle(n: int = 40) -> np.ndarray:
    t = np.linspace(0, np.pi, n)
    pts = np.stack([np.cos(t), np.sin(t)], 1)
    return pts - np.array([0.0, 0.5])


def _lshape() -> np.ndarray:
    w = 0.42
    return (
        np.array(
            [
                [-1, 1],
                [-1 + w * 2, 1],
                [-1 + w * 2, -1 + w * 2],
                [1, -1 + w * 2],
                [1, -1],
                [-1, -1],
            ],
            dtype=float,
        )
        * 0.9
    )


def _unit_polygon(name: str, rng: np.random.Generator) -> np.ndarray:
    if name == "circle":
        return _regular(64)
    if name == "square":
        return _regular(4, np.pi / 4) / np.sqrt(2) * 1.25
    if name == "triangle":
        return _regular(3, np.pi / 2) * 1.1
    if name == "star":
        return _star(5, rng.uniform(0.38, 0.48)) * 1.05
    if name == "cross":
        return _cross(rng.uniform(0.28, 0.38))
    if name == "hexagon":
        return _regular(6)
    if name == "ellipse":
        return _ellipse(rng.uniform(0.45, 0.6))
    if name == "crescent":
        return _crescent()
    if name == "arrow":
        return _arrow()
    if name == "heart":
        return _heart()
    if name == "semicircle":
        return _semicircle()
    if name == "lshape":
        return _lshape()
    raise ValueError(f"unknown class {name!r}")


# ---------------------------------------------------------------------------
# rasterisation

_ys, _xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5
_PIX = np.stack([_xs.ravel(), _ys.ravel()], 1)  # (P, 2) pixel centres


def _resample(poly: np.ndarray, n: int) -> np.ndarray:
    """Resample a closed polygon to n points equally spaced along its perimeter."""
    closed = np.concatenate([poly, poly[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    s = np.arange(n) * cum[-1] / n
    return np.stack([np.interp(s, cum, closed[:, k]) for k in range(2)], 1)


def signed_distance(poly: np.ndarray, pts: np.ndarray = _PIX) -> np.ndarray:
    """Signed distance (negative inside, even-odd rule) of pts (P,2) to polygon (K,2)."""
    ax, ay = poly[:, 0], poly[:, 1]
    bx, by = np.roll(ax, -1), np.roll(ay, -1)
    ex, ey = bx - ax, by - ay  # (K,)
    inv = 1.0 / np.maximum(ex * ex + ey * ey, 1e-12)
    px, py = pts[:, 0:1], pts[:, 1:2]  # (P,1)
    wx, wy = px - ax, py - ay  # (P,K)
    t = np.clip((wx * ex + wy * ey) * inv, 0.0, 1.0)
    dx, dy = wx - t * ex, wy - t * ey
    dist = np.sqrt((dx * dx + dy * dy).min(1))
    # even-odd crossing test for a horizontal ray to +x
    crosses = (ay > py) != (by > py)
    safe = np.where(ey == 0, 1.0, ey)
    xint = ax + (py - ay) * (ex / safe)
    inside = (crosses & (px < xint)).sum(1) % 2 == 1
    return np.where(inside, -dist, dist)


def _ink(pts: np.ndarray, shade) -> np.ndarray:
    """Apply shade(signed distance) on the pixels near the polygon; 0 elsewhere."""
    lo = np.floor(pts.min(0) - 3.0).astype(int).clip(0, SIZE)
    hi = np.ceil(pts.max(0) + 3.0).astype(int).clip(0, SIZE)
    ink = np.zeros((SIZE, SIZE))
    if (hi > lo).all():
        sub = _PIX.reshape(SIZE, SIZE, 2)[lo[1] : hi[1], lo[0] : hi[0]]
        d = signed_distance(pts, sub.reshape(-1, 2))
        ink[lo[1] : hi[1], lo[0] : hi[0]] = shade(d).reshape(sub.shape[:2])
    return ink


def render(cls_index: int, style: str, rng: np.random.Generator) -> np.ndarray:
    """Draw one image of class ``CLASSES[cls_index]``: float32 (32, 32) in [0, 1]."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    poly = _unit_polygon(CLASSES[cls_index], rng)

    # random similarity transform
    scale = rng.uniform(7.0, 12.5)
    theta = rng.uniform(0.0, 2 * np.pi)
    if rng.random() < 0.5:  # mirror
        poly = poly * np.array([-1.0, 1.0])
    c, s = np.cos(theta), np.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    pts = poly @ rot.T * scale
    lo, hi = pts.min(0), pts.max(0)
    margin = 1.0
    centre = np.empty(2)
    for k in range(2):
        a = margin - lo[k]
        b = SIZE - margin - hi[k]
        centre[k] = rng.uniform(a, b) if b > a else (a + b) / 2
    pts = pts + centre

    if style == "sketch":
        # smooth jitter of the outline, a fraction of a pixel to about a pixel
        pts = _resample(pts, 96)
        n = len(pts)
        t = 2 * np.pi * np.arange(n) / n
        jitter = np.zeros((n, 2))
        for f in (1, 2, 3, 5):
            amp = rng.uniform(0.0, 0.5) / f**0.5
            ph = rng.uniform(0, 2 * np.pi, 2)
            jitter += amp * np.stack([np.sin(f * t + ph[0]), np.cos(f * t + ph[1])], 1)
        pts = pts + jitter
        width = rng.uniform(1.0, 2.5)
        ink = _ink(pts, lambda d: np.clip(width / 2 + 0.5 - np.abs(d), 0.0, 1.0))
    else:
        ink = _ink(pts, lambda d: np.clip(0.5 - d, 0.0, 1.0))

    fg = rng.uniform(0.6, 1.0)
    bg = rng.uniform(0.0, 0.2)
    img = bg + (fg - bg) * ink
    img = img + rng.normal(0.0, rng.uniform(0.01, 0.06), size=img.shape)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def make_split(n_per_class: int, classes=None, styles=STYLES, seed: int = 0):
    """Balanced set of images.

    Returns ``x`` float32 [N,1,32,32] and ``y`` int64 [N] where ``y`` is the
    ORIGINAL class index (into ``CLASSES``).  ``classes`` is a list of class
    indices (default: all), ``styles`` a list of styles; each (class, style)
    pair gets ``n_per_class`` images.  Order is shuffled deterministically.
    """
    if classes is None:
        classes = range(len(CLASSES))
    if isinstance(styles, str):
        styles = (styles,)
    classes = list(classes)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for ci in classes:
        for st in styles:
            for _ in range(n_per_class):
                xs.append(render(ci, st, rng))
                ys.append(ci)
    x = np.stack(xs)[:, None].astype(np.float32)
    y = np.asarray(ys, dtype=np.int64)
    perm = rng.permutation(len(y))
    return np.ascontiguousarray(x[perm]), np.ascontiguousarray(y[perm])
