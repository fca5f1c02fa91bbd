"""Procedural phantoms: paired (image, mask, field of view) data that needs no download.

Public datasets such as DRIVE cannot be fetched in CI or offline demos, yet the segmentation
U-Net and the pix2pix generator still need data with real structure to learn from. The
phantoms here are built so that the mask is *visible* in the image but not trivially: a
retina has a branching vessel tree drawn darker on a textured, unevenly lit fundus, and a
cell tile has touching stained nuclei on an uneven eosin background. Everything is drawn
from one local ``numpy`` generator, so a sample depends on ``(kind, size, seed)`` only and
written PNG files are byte-identical across runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from synthmed.atomic import atomic_path
from synthmed.errors import UserInputError

PHANTOM_KINDS = ("retina", "cells")

_FOV_RADIUS = 0.46  # field-of-view radius, as a fraction of the image size
_STEP = 0.006  # vessel growth step, fraction of the image size
_FAZ_RADIUS = 0.035  # foveal avascular zone: vessels stop here
_MAX_TREE_STEPS = 8000  # safety net so a pathological seed cannot loop for long
_MAX_VESSEL_STEPS = 400  # one vessel never grows longer than 2.4 image widths


@dataclass(frozen=True)
class PhantomSample:
    """One phantom: RGB image, binary structure mask and binary field of view, all [S, S]."""

    image: np.ndarray  # uint8 [S, S, 3] RGB
    mask: np.ndarray  # uint8 [S, S], values {0, 255}
    fov: np.ndarray  # uint8 [S, S], values {0, 255}; all 255 for cells


@dataclass
class _Vessel:
    """Growth state of one vessel segment still to be grown (S-relative coordinates)."""

    x: float
    y: float
    heading: float
    width: float
    darkness: float  # veins are darker than arteries
    orbit: int  # +1/-1: arcade circling the macula in that sense; 0: free vessel
    generation: int
    orbit_radius: float = 0.0  # distance from the macula an arcade settles at


@dataclass(frozen=True)
class _Layout:
    """Where the anatomy of one fundus sits, shared by the vessel tree and the shading."""

    disc: tuple[float, float]
    disc_radius: float
    macula: tuple[float, float]


def _require_int(name: str, value: object, minimum: int) -> int:
    """Reject bools, floats and too-small values with a message naming what was expected."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UserInputError(f"phantom {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_request(kind: str, size: object, seed: object) -> tuple[int, int]:
    """Validate before any work is done; sizes are multiples of 16 so U-Nets can pool 4 times."""
    if kind not in PHANTOM_KINDS:
        valid = ", ".join(PHANTOM_KINDS)
        raise UserInputError(f"unknown phantom kind {kind!r}; expected one of: {valid}")
    ok = isinstance(size, (int, np.integer)) and not isinstance(size, bool)
    if not ok or not 32 <= size <= 4096 or size % 16:
        raise UserInputError(f"phantom size must be a multiple of 16 in 32..4096, got {size!r}")
    return int(size), _require_int("seed", seed, 0)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean unit-std noise whose features are about ``size / cells`` pixels wide.

    A small random grid upsampled bicubically is far cheaper than a wide Gaussian blur.
    """
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    field = np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC))
    return (field - field.mean()) / (field.std() + 1e-6)


def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x) as fractions of the image size."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    return axis[:, None], axis[None, :]


def _finish(rgb: np.ndarray, rng: np.random.Generator, blur: float, noise: float) -> np.ndarray:
    """Optical blur and sensor noise, then quantise: what every camera does last."""
    rgb = gaussian_filter(rgb, sigma=(blur, blur, 0.0))
    rgb = rgb + rng.normal(0.0, noise, rgb.shape).astype(np.float32)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _angle_diff(target: float, current: float) -> float:
    """Signed turn in (-pi, pi] from ``current`` to ``target``, so steering takes the short way."""
    return (target - current + math.pi) % (2.0 * math.pi) - math.pi


def _main_trunks(rng: np.random.Generator, lay: _Layout, temporal: int) -> list[_Vessel]:
    """Artery/vein pairs of the temporal arcades plus nasal trunks, all leaving the disc."""
    toward = 0.0 if temporal > 0 else math.pi  # heading pointing at the macula side
    trunks = []
    for vertical in (-1, 1):  # superior (up, -y) and inferior
        x, y = np.add(lay.disc, rng.uniform(-0.3, 0.3, 2) * lay.disc_radius).tolist()
        vein, artery = (1.0, rng.uniform(0.015, 0.018)), (0.7, rng.uniform(0.012, 0.014))
        for darkness, width in (vein, artery):
            heading = toward + temporal * vertical * math.radians(rng.uniform(55, 80))
            orbit = rng.uniform(0.16, 0.24)  # artery and vein run close but apart
            trunks.append(_Vessel(x, y, heading, width, darkness, -temporal * vertical, 0, orbit))
        nasal = math.pi - toward - temporal * vertical * math.radians(rng.uniform(25, 60))
        width, darkness = rng.uniform(0.010, 0.014), rng.choice((0.7, 1.0))
        trunks.append(_Vessel(x, y, nasal, width, darkness, 0, 1))
    return trunks


def _desired_heading(lay: _Layout, v: _Vessel, travelled: float, preferred: float) -> float:
    """Arcades circle the macula on a slowly widening orbit; other vessels keep their course."""
    if v.orbit == 0:
        return preferred
    dx, dy = v.x - lay.macula[0], v.y - lay.macula[1]
    r = math.hypot(dx, dy) + 1e-9
    target = v.orbit_radius + 0.6 * max(0.0, travelled - 0.4)
    pull = max(-1.5, min(1.5, (target - r) / 0.06))
    tx, ty = -v.orbit * dy / r, v.orbit * dx / r
    return math.atan2(ty + pull * dy / r, tx + pull * dx / r)


def _bifurcate(rng: np.random.Generator, v: _Vessel) -> _Vessel:
    """Split off a daughter: widths obey Murray's law, the thinner branch turns more."""
    ratio = rng.uniform(0.4, 0.7) if v.generation == 0 else rng.uniform(0.55, 0.9)
    child_w = v.width * ratio
    parent_w = (v.width**3 - child_w**3) ** (1.0 / 3.0)
    side = 1 if rng.random() < 0.5 else -1
    angle = math.radians(rng.uniform(25, 75))
    child = _Vessel(v.x, v.y, v.heading + side * angle, child_w, v.darkness, 0, v.generation + 1)
    v.heading -= side * angle * 0.5 * (child_w / parent_w) ** 2
    v.width = parent_w
    return child


def _grow_vessel(
    rng: np.random.Generator, lay: _Layout, v: _Vessel, w_min: float, segments: list, pending: list
) -> int:
    """Grow one vessel until it leaves the FOV, enters the fovea or gets too thin.

    Appends its segments, queues its daughters on ``pending`` and returns the steps taken.
    """
    preferred, omega, travelled, steps = v.heading, 0.0, 0.0, 0
    next_branch = rng.uniform(0.6, 1.4) * (0.065 + 4.5 * v.width)
    while steps < _MAX_VESSEL_STEPS:
        steps += 1
        omega = 0.8 * omega + rng.normal(0.0, 0.035)  # correlated wiggle = tortuosity
        gain = 0.25 if v.orbit else 0.04
        desired = _desired_heading(lay, v, travelled, preferred)
        v.heading += omega + gain * _angle_diff(desired, v.heading)
        nx, ny = v.x + _STEP * math.cos(v.heading), v.y + _STEP * math.sin(v.heading)
        segments.append((v.x, v.y, nx, ny, v.width, v.darkness))
        v.x, v.y, travelled = nx, ny, travelled + _STEP
        v.width = v.width * (1.0 - 0.4 * _STEP) - 0.006 * _STEP  # thin vessels die sooner
        outside_fov = math.hypot(nx - 0.5, ny - 0.5) > _FOV_RADIUS + 0.01
        in_fovea = math.hypot(nx - lay.macula[0], ny - lay.macula[1]) < _FAZ_RADIUS
        if outside_fov or in_fovea or v.width < w_min:
            break
        next_branch -= _STEP
        outside_disc = math.hypot(nx - lay.disc[0], ny - lay.disc[1]) > 1.3 * lay.disc_radius
        if next_branch <= 0 and outside_disc and v.generation < 10:
            pending.append(_bifurcate(rng, v))
            next_branch = rng.uniform(0.6, 1.4) * (0.065 + 4.5 * v.width)
    return steps


def _grow_tree(rng: np.random.Generator, lay: _Layout, temporal: int, size: int) -> list[tuple]:
    """All vessel segments as (x0, y0, x1, y1, width, darkness) in S-relative units.

    Vessels end at about one pixel, so a small image gets only the big vessels instead of
    a smear of sub-pixel capillaries.
    """
    w_min = max(0.0022, 0.35 / size)
    pending, segments, budget = _main_trunks(rng, lay, temporal), [], _MAX_TREE_STEPS
    while pending and budget > 0:
        budget -= _grow_vessel(rng, lay, pending.pop(), w_min, segments, pending)
    return segments


def _draw_vessels(segments: list[tuple], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise on a supersampled canvas and box-downsample: coverage and darkness maps.

    Red channel carries coverage (for the mask), green the contrast. Wide vessels get a
    paler centre line, the central light reflex of real fundus photos.
    """
    ss = int(np.clip(2048 // size, 1, 8))
    scale = size * ss
    canvas = Image.new("RGB", (scale, scale))
    draw = ImageDraw.Draw(canvas)
    strokes = []
    for x0, y0, x1, y1, w, darkness in segments:
        px = w * size
        contrast = darkness * (0.5 + 0.5 * min(1.0, w / 0.014)) * min(1.0, px)
        line = (x0 * scale, y0 * scale, x1 * scale, y1 * scale)
        strokes.append((contrast, line, max(px, 1.0) * ss))
    strokes.sort(key=lambda stroke: stroke[0])  # higher contrast wins where vessels cross
    for contrast, (x0, y0, x1, y1), width in strokes:
        fill, r = (255, round(255 * contrast), 0), width / 2.0
        draw.line((x0, y0, x1, y1), fill=fill, width=max(1, round(width)))
        draw.ellipse((x1 - r, y1 - r, x1 + r, y1 + r), fill=fill)
    for contrast, line, width in strokes:
        if width >= 4 * ss:
            draw.line(line, fill=(255, round(140 * contrast), 0), width=max(1, round(0.25 * width)))
    maps = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0
    return maps[..., 0], maps[..., 1]


def _fundus_shading(rng: np.random.Generator, lay: _Layout, size: int) -> np.ndarray:
    """Vessel-free fundus: coloured, textured, with optic disc, macula and light fall-off."""
    yy, xx = _pixel_grid(size)
    base = np.array([0.85, 0.40, 0.16], np.float32) * rng.uniform(0.85, 1.1)
    base *= np.array([1.0, rng.uniform(0.8, 1.2), rng.uniform(0.6, 1.4)], np.float32)
    blotch = _smooth_noise(rng, size, 5)
    choroid = 1.0 - np.abs(_smooth_noise(rng, size, 18))  # ridges: choroidal vessel pattern
    mottle = _smooth_noise(rng, size, max(4, size // 6))
    tex = 1.0 + 0.07 * blotch + 0.03 * mottle
    tex *= 1.0 - rng.uniform(0.03, 0.1) * np.clip(choroid, 0, 1) ** 3
    rgb = base * tex[..., None]
    d_disc = np.hypot(xx - lay.disc[0], yy - lay.disc[1]) / lay.disc_radius
    disc = np.clip((1.1 - d_disc) / 0.4, 0, 1) ** 0.7
    cup = np.clip((0.5 - d_disc) / 0.25, 0, 1)
    rgb += disc[..., None] * (np.array([1.0, 0.86, 0.55], np.float32) - rgb) * 0.8
    rgb += cup[..., None] * (np.array([1.0, 0.97, 0.85], np.float32) - rgb) * 0.6
    d_mac = np.hypot(xx - lay.macula[0], yy - lay.macula[1])
    macula = np.exp(-((d_mac / rng.uniform(0.05, 0.07)) ** 2))
    rgb *= 1.0 - macula[..., None] * np.array([0.3, 0.45, 0.45], np.float32) * rng.uniform(0.6, 1.0)
    r = np.hypot(xx - 0.5, yy - 0.5) / _FOV_RADIUS
    tilt = rng.uniform(-0.12, 0.12) * (xx - 0.5) + rng.uniform(-0.12, 0.12) * (yy - 0.5)
    light = (1.0 - rng.uniform(0.35, 0.6) * r ** rng.uniform(2.0, 3.5)) * (1.0 + tilt)
    return rgb * light[..., None]


def _render_retina(rng: np.random.Generator, size: int) -> PhantomSample:
    """Colour fundus photo; the mask is the vessel coverage thresholded at half a pixel."""
    temporal = 1 if rng.random() < 0.5 else -1  # +1: disc on the left, macula to its right
    disc = (0.5 - temporal * rng.uniform(0.25, 0.3), 0.5 + rng.uniform(-0.03, 0.03))
    disc_radius = rng.uniform(0.055, 0.065)
    macula = (disc[0] + temporal * 5.0 * disc_radius, disc[1] + rng.uniform(0.0, 0.03))
    lay = _Layout(disc, disc_radius, macula)
    coverage, contrast = _draw_vessels(_grow_tree(rng, lay, temporal, size), size)
    yy, xx = _pixel_grid(size)
    fov = np.hypot(xx - 0.5, yy - 0.5) <= _FOV_RADIUS
    rgb = _fundus_shading(rng, lay, size)
    vessel_tint = np.array([0.35, 0.72, 0.6], np.float32) * rng.uniform(0.8, 1.05)
    rgb *= 1.0 - contrast[..., None] * vessel_tint
    image = _finish(rgb, rng, blur=0.5 * max(1.0, size / 512), noise=rng.uniform(0.006, 0.014))
    image[~fov] = 0
    mask = (coverage >= 0.5) & fov
    return PhantomSample(image, mask.astype(np.uint8) * 255, fov.astype(np.uint8) * 255)


def _stamp_nucleus(
    rng: np.random.Generator, cx: float, cy: float, r0: float, hema: np.ndarray, mask: np.ndarray
) -> None:
    """Add one irregular ellipse: darker rim, soft one-pixel edge, max-blended into ``hema``."""
    radius, elong = r0 * rng.uniform(0.75, 1.25), rng.uniform(0.0, 0.35)
    phi = rng.uniform(0.0, math.pi)
    harmonics = np.arange(2, 6)
    amps, phases = rng.normal(0.0, 0.06, 4) / harmonics, rng.uniform(0.0, 2 * math.pi, 4)
    stain = rng.uniform(0.6, 1.25)
    ext = radius * (1 + elong) * 1.4 + 2
    size = hema.shape[0]
    x0, x1 = max(int(cx - ext), 0), min(int(cx + ext) + 1, size)
    y0, y1 = max(int(cy - ext), 0), min(int(cy + ext) + 1, size)
    if x0 >= x1 or y0 >= y1:
        return
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
    u = dx * math.cos(phi) + dy * math.sin(phi)
    v = -dx * math.sin(phi) + dy * math.cos(phi)
    theta = np.arctan2(v, u)[..., None]
    wobble = 1.0 + np.sum(amps * np.cos(harmonics * theta + phases), axis=-1)
    t = np.hypot(u / (1 + elong), v / (1 - 0.5 * elong)) / (radius * wobble)
    mask[y0:y1, x0:x1] |= t < 1.0
    value = stain * (0.8 + 0.45 * np.minimum(t, 1.0) ** 4) * np.clip((1.08 - t) / 0.16, 0, 1)
    np.maximum(hema[y0:y1, x0:x1], value, out=hema[y0:y1, x0:x1])


def _render_cells(rng: np.random.Generator, size: int) -> PhantomSample:
    """H&E-like tile: hematoxylin nuclei on eosin stroma, mixed by Beer-Lambert absorption."""
    r0 = max(size * rng.uniform(0.035, 0.055), 2.5)
    spacing = r0 * rng.uniform(2.45, 2.7)
    n = int(math.ceil(size / spacing)) + 2
    grid = (np.stack(np.meshgrid(np.arange(n), np.arange(n)), -1).reshape(-1, 2) - 0.5) * spacing
    centres = grid + rng.uniform(-0.35, 0.35, grid.shape) * spacing
    keep = rng.random(len(centres)) < rng.uniform(0.65, 0.8)
    hema = np.zeros((size, size), np.float32)
    mask = np.zeros((size, size), bool)
    for cx, cy in centres[keep]:
        _stamp_nucleus(rng, cx, cy, r0, hema, mask)
    speckle = rng.standard_normal((size, size)).astype(np.float32)
    chromatin = gaussian_filter(speckle, max(0.6, r0 / 12))  # grain scales with the nucleus
    hema *= 1.0 + 0.35 * chromatin / (chromatin.std() + 1e-6)
    hema *= 1.0 + 0.12 * _smooth_noise(rng, size, 3)  # uneven hematoxylin uptake
    fibres = np.clip(1.0 - np.abs(_smooth_noise(rng, size, max(4, size // 24))), 0, 1) ** 4
    gaps = np.clip((_smooth_noise(rng, size, 4) - 1.0) / 0.6, 0, 1)  # pale, unstained spaces
    eosin = (0.22 + 0.05 * _smooth_noise(rng, size, 6) + 0.18 * fibres) * (1 - 0.8 * gaps)
    eosin *= 1.0 - 0.5 * np.clip(hema, 0, 1)
    h_vec = np.array([0.65, 0.70, 0.29], np.float32) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    e_vec = np.array([0.10, 0.85, 0.35], np.float32) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    density = hema[..., None] * h_vec + np.clip(eosin, 0, None)[..., None] * e_vec + 0.02
    rgb = np.exp(-math.log(10) * density) * rng.uniform(0.92, 1.0)
    image = _finish(rgb, rng, blur=0.6 * max(1.0, size / 512), noise=rng.uniform(0.008, 0.018))
    full = np.full((size, size), 255, np.uint8)
    return PhantomSample(image, mask.astype(np.uint8) * 255, full)


def render_phantom(kind: str, size: int, seed: int) -> PhantomSample:
    """Render one phantom of ``kind`` at ``size`` x ``size``; a pure function of its arguments.

    Only a local generator seeded with ``seed`` is used, never the global numpy state, so
    the result is reproducible whatever else the process does.
    """
    size, seed = _check_request(kind, size, seed)
    rng = np.random.default_rng(seed)
    return _render_retina(rng, size) if kind == "retina" else _render_cells(rng, size)


def _write_png_atomic(array: np.ndarray, path: Path) -> None:
    """Pillow writes no timestamp or other metadata here, so equal arrays give equal bytes."""
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG", optimize=False, compress_level=6)


def write_phantom_dataset(
    kind: str,
    out: Path,
    count: int,
    size: int,
    seed: int,
    *,
    grayscale: bool = False,
    progress: bool = False,
) -> list[str]:
    """Write ``count`` phantoms as ``out/{images,masks,fov}/<kind>_<i:05d>.png``; return names.

    Sample ``i`` is seeded from ``(seed, i)`` alone, so growing ``count`` keeps the earlier
    samples and their PNG bytes unchanged. ``grayscale`` writes one-channel images (the
    luma of the colour phantom), like a brightfield or X-ray set.
    """
    size, seed = _check_request(kind, size, seed)
    count = _require_int("count", count, 1)
    out = Path(out)
    folders = {name: out / name for name in ("images", "masks", "fov")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in tqdm(range(count), desc=f"{kind} phantoms", disable=not progress, unit="img"):
        sample_seed = int(np.random.SeedSequence([seed, i]).generate_state(1, np.uint64)[0])
        sample = render_phantom(kind, size, sample_seed)
        name = f"{kind}_{i:05d}"
        image = sample.image
        if grayscale:
            image = np.asarray(Image.fromarray(image).convert("L"))
        _write_png_atomic(image, folders["images"] / f"{name}.png")
        _write_png_atomic(sample.mask, folders["masks"] / f"{name}.png")
        _write_png_atomic(sample.fov, folders["fov"] / f"{name}.png")
        names.append(name)
    return names
