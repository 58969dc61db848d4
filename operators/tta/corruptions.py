"""CIFAR-10-C corruptions (Hendrycks & Dietterich, 2019) for small grayscale images.

``corrupt(images, name, severity, seed)`` maps ``(N, H, W)`` images in [0, 1] to
corrupted ones, deterministic for a seed, severities 1–5 with the CIFAR-10-C parameters.

Which of the 15, and how they carry over to 8×8 and 28×28 (see ../shared/docs/tta.md):

- **Pixel-wise, unchanged parameters** (they do not depend on image size):
  ``gaussian_noise``, ``shot_noise``, ``impulse_noise``, ``brightness`` (grayscale:
  add ``c``; CIFAR adds it to HSV value), ``contrast``.
- **Relative to the image size** (same parameters, applied at the native size):
  ``zoom_blur`` (zoom factors), ``pixelate`` (a size fraction), ``elastic_transform``
  (CIFAR-10-C writes its parameters as fractions of the image size), ``fog`` (a plasma
  fractal of the 32×32 CIFAR field of view, resampled to the image).
- **Pixel radii**: ``defocus_blur``, ``glass_blur``, ``motion_blur`` and ``snow`` (its
  motion-blurred flakes) are applied at CIFAR's 32×32 scale: the image is resampled to
  32×32, corrupted with the CIFAR parameters, and resampled back (antialiased). A blur
  radius therefore scales with the image size, as tta.md asks.
- ``jpeg_compression``: Pillow JPEG at the CIFAR qualities, at the native size (an 8×8
  image is exactly one JPEG block).
- **Dropped**: ``frost`` — it blends photographs of frost, which we cannot ship or
  download; a procedural stand-in would be a different corruption under the same name.

Held-out corruptions for choosing hyper-parameters (never in the evaluation stream),
:data:`VALIDATION`: ``speckle_noise`` and ``gaussian_blur`` from CIFAR-10-C's own extra
set (its other extras, ``spatter`` and ``saturate``, need colour), ``gamma`` (``x ** γ``,
γ = 1.5…4), a photometric shift of our own, and ``rotate`` (±10…30°) and ``shear``
(±0.1…0.5), geometric shifts from MNIST-C (Mu & Gilmer 2019; our severity parameters).
Why the last three: the two extras barely move an 8×8 digit classifier, and a
validation set that shifts nothing selects nothing (with the first three alone, the
candidates' validation errors differ by one or two images).

Example:
    >>> import numpy as np
    >>> from operators.tta.corruptions import CORRUPTIONS, corrupt
    >>> x = np.random.default_rng(0).random((4, 8, 8)).astype(np.float32)
    >>> y = corrupt(x, "gaussian_noise", 5, seed=1)
    >>> y.shape, y.dtype, bool(((y >= 0) & (y <= 1)).all())
    ((4, 8, 8), dtype('float32'), True)
    >>> bool(np.array_equal(y, corrupt(x, "gaussian_noise", 5, seed=1)))
    True
    >>> len(CORRUPTIONS)
    14
"""

from __future__ import annotations

import functools
import io
import zlib
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from stream.errors import ConfigError

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
_CIFAR = 32


# -- helpers ------------------------------------------------------------------------------
def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).unsqueeze(1)


def _n(x: torch.Tensor) -> np.ndarray:
    return x.squeeze(1).numpy()


def _resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if x.shape[1:] == size:
        return x
    return _n(F.interpolate(_t(x), size=size, mode="bilinear", align_corners=False, antialias=True))


def _at_cifar_scale(fn: Corruption) -> Corruption:
    """Apply ``fn`` (written for 32×32 pixels) at 32×32 and resample back.

    When 32 is a multiple of the size (8×8 digits), up-sampling repeats pixels and
    down-sampling averages blocks, so the round trip alone is exactly the identity
    (sklearn's digits were made by counting 4×4 blocks of 32×32 bitmaps).
    """
    @functools.wraps(fn)
    def wrapped(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
        h, w = x.shape[1:]
        if _CIFAR % h == 0 and _CIFAR % w == 0:
            up = _n(F.interpolate(_t(x), scale_factor=(_CIFAR // h, _CIFAR // w), mode="nearest"))
            out = np.clip(fn(up, s, rng), 0, 1)
            return _n(F.interpolate(_t(out), size=(h, w), mode="area"))
        return _resize(np.clip(fn(_resize(x, (_CIFAR, _CIFAR)), s, rng), 0, 1), (h, w))
    return wrapped


def _convolve(x: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Convolve each image with its own kernel (or one kernel for all), reflect padding."""
    k = np.broadcast_to(kernels, (len(x), *kernels.shape[-2:])) if kernels.ndim == 2 else kernels
    kh, kw = k.shape[-2:]
    pad = (kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2)
    xt = F.pad(_t(x).transpose(0, 1), pad, mode="reflect" if min(x.shape[1:]) > max(kh, kw) // 2
               else "replicate")
    w = torch.from_numpy(np.ascontiguousarray(k[:, ::-1, ::-1], dtype=np.float32)).unsqueeze(1)
    return _n(F.conv2d(xt, w, groups=len(x)).transpose(0, 1))


def _gaussian_kernel(sigma: float) -> np.ndarray:
    r = max(1, int(np.ceil(3 * sigma)))
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / max(sigma, 1e-6)) ** 2)
    k = np.outer(g, g)
    return k / k.sum()


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return x if sigma <= 0 else _convolve(x, _gaussian_kernel(sigma))


def _motion_kernels(radius: float, sigma: float, angles_deg: np.ndarray) -> np.ndarray:
    """One-sided line kernels (as ImageMagick's motion blur), one per angle."""
    r = int(np.ceil(radius))
    size = 2 * r + 1
    t = np.arange(r + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (t / sigma) ** 2)
    kernels = np.zeros((len(angles_deg), size, size))
    for i, a in enumerate(np.deg2rad(angles_deg)):
        xs, ys = r + t * np.cos(a), r + t * np.sin(a)
        x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
        fx, fy = xs - x0, ys - y0
        for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                            (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            xi, yi = np.clip(x0 + dx, 0, size - 1), np.clip(y0 + dy, 0, size - 1)
            np.add.at(kernels[i], (yi, xi), weights * wgt)
        kernels[i] /= kernels[i].sum()
    return kernels


def _plasma(mapsize: int, wibbledecay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square plasma fractal in [0, 1] (as in CIFAR-10-C's fog)."""
    maparray = np.zeros((mapsize, mapsize))
    stepsize, wibble = mapsize, 100.0
    maparray[0, 0] = 0

    def wibbled(a: np.ndarray) -> np.ndarray:
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)

    while stepsize >= 2:
        half = stepsize // 2
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        square = corners + np.roll(corners, -1, 0)
        square = square + np.roll(square, -1, 1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbled(square)
        drgrid = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ldr = drgrid + np.roll(drgrid, 1, 0)
        lul = ulgrid + np.roll(ulgrid, -1, 1)
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbled(ldr + lul)
        tdr = drgrid + np.roll(drgrid, 1, 1)
        tul = ulgrid + np.roll(ulgrid, -1, 0)
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbled(tdr + tul)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def _affine(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Warp each image by its own ``(2, 3)`` affine (normalised coordinates, zeros outside)."""
    xt = _t(x)
    grid = F.affine_grid(torch.from_numpy(theta.astype(np.float32)), list(xt.shape), align_corners=False)
    return _n(F.grid_sample(xt, grid, mode="bilinear", padding_mode="zeros", align_corners=False))


def _zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom into the centre by ``factor`` (crop back to the same size)."""
    theta = torch.tensor([[1 / factor, 0, 0], [0, 1 / factor, 0]], dtype=torch.float32)
    xt = _t(x)
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(xt.shape), align_corners=False)
    return _n(F.grid_sample(xt, grid, mode="bilinear", padding_mode="border", align_corners=False))


# -- noise ----------------------------------------------------------------------------------
def gaussian_noise(x, s, rng):
    c = [0.04, 0.06, 0.08, 0.09, 0.10][s - 1]
    return x + rng.normal(size=x.shape, scale=c)


def shot_noise(x, s, rng):
    c = [500, 250, 100, 75, 50][s - 1]
    return rng.poisson(np.clip(x, 0, 1) * c) / c


def impulse_noise(x, s, rng):
    c = [0.01, 0.02, 0.03, 0.05, 0.07][s - 1]
    u = rng.random(x.shape)
    out = x.copy()
    out[u < c / 2] = 0.0
    out[(u >= c / 2) & (u < c)] = 1.0
    return out


def speckle_noise(x, s, rng):
    c = [0.06, 0.1, 0.12, 0.16, 0.2][s - 1]
    return x + x * rng.normal(size=x.shape, scale=c)


def gamma(x, s, rng):
    return x ** [1.5, 2.0, 2.5, 3.0, 4.0][s - 1]


def rotate(x, s, rng):
    deg = [10, 15, 20, 25, 30][s - 1] * rng.choice([-1.0, 1.0], size=len(x))
    a = np.deg2rad(deg)
    theta = np.stack([np.stack([np.cos(a), -np.sin(a), 0 * a], 1), np.stack([np.sin(a), np.cos(a), 0 * a], 1)], 1)
    return _affine(x, theta)


def shear(x, s, rng):
    k = [0.1, 0.2, 0.3, 0.4, 0.5][s - 1] * rng.choice([-1.0, 1.0], size=len(x))
    one, zero = np.ones_like(k), np.zeros_like(k)
    theta = np.stack([np.stack([one, k, zero], 1), np.stack([zero, one, zero], 1)], 1)
    return _affine(x, theta)


# -- blur -------------------------------------------------------------------------------------
@_at_cifar_scale
def defocus_blur(x, s, rng):
    radius, alias = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][s - 1]
    r = max(8, int(np.ceil(radius)))
    ys, xs = np.mgrid[-r:r + 1, -r:r + 1]
    disk = (xs ** 2 + ys ** 2 <= radius ** 2).astype(np.float64)
    disk /= disk.sum()
    disk = _convolve(disk[None], _gaussian_kernel(alias))[0]
    return _convolve(x, disk / disk.sum())


@_at_cifar_scale
def glass_blur(x, s, rng):
    sigma, delta, iterations = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][s - 1]
    x = _gaussian_blur(x, sigma).copy()
    n, h, w = x.shape
    idx = np.arange(n)
    for _ in range(iterations):
        for hh in range(h - delta, delta, -1):
            for ww in range(w - delta, delta, -1):
                dx, dy = rng.integers(-delta, delta, size=(2, n))
                a = x[idx, hh, ww].copy()
                x[idx, hh, ww] = x[idx, hh + dy, ww + dx]
                x[idx, hh + dy, ww + dx] = a
    return _gaussian_blur(x, sigma)


@_at_cifar_scale
def motion_blur(x, s, rng):
    radius, sigma = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][s - 1]
    return _convolve(x, _motion_kernels(radius, sigma, rng.uniform(-45, 45, len(x))))


def zoom_blur(x, s, rng):
    top = [1.06, 1.11, 1.16, 1.21, 1.26][s - 1]
    factors = np.arange(1, top, 0.01)
    out = x.copy()
    for z in factors:
        out += _zoom(x, z)
    return out / (len(factors) + 1)


@_at_cifar_scale
def gaussian_blur(x, s, rng):
    return _gaussian_blur(x, [0.4, 0.6, 0.7, 0.8, 1.0][s - 1])


# -- weather ------------------------------------------------------------------------------------
@_at_cifar_scale
def snow(x, s, rng):
    loc, scale, zoom, threshold, radius, sigma, keep = [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)][s - 1]
    layer = _zoom(rng.normal(loc, scale, x.shape).astype(np.float32), zoom)
    layer[layer < threshold] = 0
    layer = _convolve(np.clip(layer, 0, 1), _motion_kernels(radius, sigma, rng.uniform(-135, -45, len(x))))
    x = keep * x + (1 - keep) * np.maximum(x, x * 1.5 + 0.5)
    return x + layer + np.rot90(layer, k=2, axes=(1, 2))


def fog(x, s, rng):
    c, decay = [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][s - 1]
    top = x.max(axis=(1, 2), keepdims=True)
    plasma = np.stack([_plasma(_CIFAR, decay, rng) for _ in range(len(x))])
    x = x + c * _resize(plasma.astype(np.float32), x.shape[1:])
    return x * top / (top + c)


# -- digital ------------------------------------------------------------------------------------
def brightness(x, s, rng):
    return x + [0.05, 0.1, 0.15, 0.2, 0.3][s - 1]


def contrast(x, s, rng):
    c = [0.75, 0.5, 0.4, 0.3, 0.15][s - 1]
    means = x.mean(axis=(1, 2), keepdims=True)
    return (x - means) * c + means


def elastic_transform(x, s, rng):
    n, h, w = x.shape
    alpha, sigma, affine = np.array([(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
                                     (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)][s - 1]) * h
    # random affine: three points moved by up to `affine` pixels
    cy, cx, sq = h / 2, w / 2, min(h, w) / 3
    src = np.array([[cx + sq, cy + sq], [cx + sq, cy - sq], [cx - sq, cy - sq]])
    dst = src + rng.uniform(-affine, affine, size=(n, 3, 2))
    a = np.concatenate([src, np.ones((3, 1))], axis=1)                 # (3, 3)
    mats = np.linalg.solve(a[None], dst).transpose(0, 2, 1)             # (n, 2, 3): dst = M·[src,1]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)])            # (3, h·w)
    # inverse warp: where each output pixel comes from
    full = np.concatenate([mats, np.tile([[[0, 0, 1]]], (n, 1, 1))], axis=1)
    coords = np.linalg.inv(full)[:, :2] @ pts                           # (n, 2, h·w)
    dx = _gaussian_blur(rng.uniform(-1, 1, (n, h, w)).astype(np.float32), sigma) * alpha
    dy = _gaussian_blur(rng.uniform(-1, 1, (n, h, w)).astype(np.float32), sigma) * alpha
    gx = coords[:, 0].reshape(n, h, w) + dx
    gy = coords[:, 1].reshape(n, h, w) + dy
    grid = np.stack([(2 * gx + 1) / w - 1, (2 * gy + 1) / h - 1], axis=-1).astype(np.float32)
    out = F.grid_sample(_t(x), torch.from_numpy(grid), mode="bilinear", padding_mode="reflection",
                        align_corners=False)
    return _n(out)


def pixelate(x, s, rng):
    c = [0.95, 0.9, 0.85, 0.75, 0.65][s - 1]
    h, w = x.shape[1:]
    small = F.interpolate(_t(x), size=(max(1, int(h * c)), max(1, int(w * c))), mode="area")
    return _n(F.interpolate(small, size=(h, w), mode="nearest"))


def jpeg_compression(x, s, rng):
    from PIL import Image

    quality = [80, 65, 58, 50, 40][s - 1]
    out = np.empty_like(x)
    for i, img in enumerate(np.clip(x, 0, 1)):
        buf = io.BytesIO()
        Image.fromarray(np.round(img * 255).astype(np.uint8), mode="L").save(buf, "JPEG", quality=quality)
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf), dtype=np.float32) / 255
    return out


#: the evaluation corruptions, in CIFAR-10-C order (frost dropped)
CORRUPTIONS: dict[str, Corruption] = {f.__name__: f for f in (
    gaussian_noise, shot_noise, impulse_noise, defocus_blur, glass_blur, motion_blur, zoom_blur,
    snow, fog, brightness, contrast, elastic_transform, pixelate, jpeg_compression)}

#: held out for choosing hyper-parameters (CIFAR-10-C's extra corruptions)
VALIDATION: dict[str, Corruption] = {f.__name__: f for f in (speckle_noise, gaussian_blur, gamma, rotate, shear)}


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Corrupt ``(N, H, W)`` images in [0, 1]; same seed, same output.

    Args:
        images: grayscale images in [0, 1] (at least 2×2).
        name: a key of :data:`CORRUPTIONS` or :data:`VALIDATION`.
        severity: 1 (mild) to 5 (strong).
        seed: the random seed (noise, angles, displacements).
    """
    fn = CORRUPTIONS.get(name) or VALIDATION.get(name)
    if fn is None:
        raise ConfigError(f"unknown corruption {name!r}; known: {', '.join([*CORRUPTIONS, *VALIDATION])}")
    if severity not in (1, 2, 3, 4, 5):
        raise ConfigError(f"corruption severity must be 1..5, got {severity!r}")
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 3 or min(x.shape[1:]) < 2:
        raise ConfigError(f"corrupt() takes (N, H, W) grayscale images, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ConfigError("corrupt(): images contain NaN or inf")
    rng = np.random.default_rng([seed, severity, zlib.crc32(name.encode())])
    return np.clip(fn(x.copy(), severity, rng), 0, 1).astype(np.float32)
