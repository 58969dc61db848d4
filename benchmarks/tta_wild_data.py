"""Data of benchmarks/tta_wild.py: coloured characters rendered offline, and the
corruptions of operators.tta.corruptions applied to colour images.

**Characters**: 32 classes (``A``–``Z`` without ``I`` and ``O``, digits ``2``–``9``: no
class is a glyph of another in some font), rendered at 32×32 in colour with Pillow from
every font installed on the machine that has all of them (Debian's ``fonts-*`` packages
under /usr/share/fonts, e.g. ``apt-get install fonts-dejavu fonts-liberation
fonts-freefont-ttf fonts-urw-base35 fonts-noto-core``), plus matplotlib's bundled
DejaVu fonts, so a fresh machine with nothing but the Python packages still builds it.
Each image draws a font, a size (60–85 % of the height), a rotation (±15°), an offset
(±4 px), a background (plain, a gradient, a smooth colour texture or stripes) and a
glyph colour that differs from the background's luminance by at least 0.3. The set is
deterministic for a seed and a font list, and cached as ``.npz`` under
``$HEBBSTREAM_CACHE`` (default ``<tmp>/hebbstream-cache``), never in the repository.

**Colour corruptions** (:func:`corrupt_rgb`): each channel goes through
:func:`operators.tta.corruptions.corrupt`. Pixel noise (gaussian, shot, impulse,
speckle) is drawn independently per channel, as CIFAR-10-C does; every other
corruption uses the same random draws for the three channels (the same blur angle,
displacement field, snowflakes, fog), so geometry stays aligned. Differences from
CIFAR-10-C: contrast takes each channel's own mean, brightness adds to each channel
(CIFAR: HSV value), JPEG compresses each channel as a grayscale image (no chroma
subsampling).

Example (run from benchmarks/; tests/test_tta_wild_data.py checks the same)::

    from tta_wild_data import characters, corrupt_rgb
    data = characters(1000, seed=0)            # rendered once, then read from the cache
    shifted = corrupt_rgb(data["images"], "motion_blur", 5, seed=0)
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile

import numpy as np

from operators.tta.corruptions import corrupt

CLASSES = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
SIZE = 32
_SCALE = 2                       # glyphs are drawn at 64×64 and reduced (antialiasing)
PIXEL_NOISE = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")
VERSION = 1                      # bump when rendering changes (invalidates the cache)


def cache_dir() -> str:
    return os.environ.get("HEBBSTREAM_CACHE") or os.path.join(tempfile.gettempdir(), "hebbstream-cache")


def _font_files() -> list[str]:
    import matplotlib

    paths = []
    for root in ("/usr/share/fonts", "/usr/local/share/fonts", os.path.expanduser("~/.fonts")):
        for ext in ("ttf", "otf", "TTF", "OTF"):
            paths += glob.glob(os.path.join(root, "**", f"*.{ext}"), recursive=True)
    paths += glob.glob(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVu*.ttf"))
    # Noto's hundreds of script fonts have no Latin letters: open only its Latin families
    latin = ("NotoSans-", "NotoSerif-", "NotoSansMono-", "NotoSansDisplay-", "NotoSerifDisplay-")
    return sorted(p for p in set(paths) if "Noto" not in os.path.basename(p) or os.path.basename(p).startswith(latin))


def usable_fonts() -> list[tuple[str, str]]:
    """(file path, "family style") of every font that maps all :data:`CLASSES`, one per
    family and style (the first file found), symbol and math fonts left out."""
    from fontTools.ttLib import TTFont

    found: dict[str, str] = {}
    for path in _font_files():
        try:
            font = TTFont(path, lazy=True, fontNumber=0)
            cmap = font.getBestCmap() or {}
            names = font["name"]
            family = str(names.getDebugName(1) or os.path.basename(path))
            style = str(names.getDebugName(2) or "")
        except Exception:  # unreadable or unusual font files are simply not used
            continue
        label = f"{family} {style}".strip()
        if any(w in label.lower() for w in ("math", "symbol", "dingbat", "music", "emoji", "d050000l", "nushu")):
            continue
        if all(ord(c) in cmap for c in CLASSES) and label not in found:
            found[label] = path
    return sorted((p, label) for label, p in found.items())


def _background(rng: np.random.Generator) -> np.ndarray:
    """A (3, 32, 32) background in [0, 1]: plain, gradient, smooth texture or stripes."""
    kind = int(rng.integers(4))
    a, b = rng.random(3), rng.random(3)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    if kind == 0:
        return np.broadcast_to(a[:, None, None], (3, SIZE, SIZE)).copy()
    if kind == 1:
        angle = rng.uniform(0, 2 * np.pi)
        t = (np.cos(angle) * xx + np.sin(angle) * yy)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
        return a[:, None, None] * (1 - t) + b[:, None, None] * t
    if kind == 2:
        import torch
        import torch.nn.functional as F

        grid = torch.from_numpy(rng.random((1, 3, 4, 4)).astype(np.float32))
        return F.interpolate(grid, size=(SIZE, SIZE), mode="bicubic", align_corners=True)[0].clamp(0, 1).numpy()
    period = rng.uniform(4, 10)
    angle = rng.uniform(0, np.pi)
    t = (np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) * SIZE / period) > 0).astype(float)
    return a[:, None, None] * (1 - t) + b[:, None, None] * t


def _luminance(rgb: np.ndarray) -> float:
    return float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])


def render(n: int, seed: int, fonts: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``(n, 3, 32, 32)`` uint8 with balanced labels ``(n,)`` (shuffled)."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng([seed, 20261203])
    labels = rng.permutation(np.arange(n) % len(CLASSES))
    out = np.empty((n, 3, SIZE, SIZE), dtype=np.uint8)
    big = SIZE * _SCALE
    # one face per font, drawn at the largest size and scaled by the affine warp below
    # (a face per size means thousands of font loads)
    faces = [ImageFont.truetype(path, int(0.85 * big)) for path, _ in fonts]
    for i, label in enumerate(labels):
        mask = Image.new("L", (big, big), 0)
        ImageDraw.Draw(mask).text((big / 2, big / 2), CLASSES[label], fill=255,
                                  font=faces[int(rng.integers(len(faces)))], anchor="mm")
        scale = rng.uniform(0.6, 0.85) / 0.85
        angle = np.deg2rad(rng.uniform(-15, 15))
        tx, ty = rng.uniform(-4, 4, 2) * _SCALE
        # output pixel -> source pixel: centre + R(-angle) (out - centre - t) / scale
        cos, sin, c = np.cos(angle) / scale, np.sin(angle) / scale, big / 2
        a, b, d, e = cos, sin, -sin, cos
        data = (a, b, c - a * (c + tx) - b * (c + ty), d, e, c - d * (c + tx) - e * (c + ty))
        mask = mask.transform((big, big), Image.AFFINE, data, resample=Image.BILINEAR)
        m = np.asarray(mask.resize((SIZE, SIZE), Image.BOX), dtype=np.float32)[None] / 255.0
        bg = _background(rng)
        lum = _luminance(bg.mean(axis=(1, 2)))
        for _ in range(20):
            fg = rng.random(3)
            if abs(_luminance(fg) - lum) >= 0.3:
                break
        else:
            fg = np.zeros(3) if lum > 0.5 else np.ones(3)
        img = bg * (1 - m) + fg[:, None, None] * m
        out[i] = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return out, labels.astype(np.int64)


def characters(n: int, seed: int) -> dict:
    """The rendered set (built once, then read from the cache): ``images`` float32
    ``(n, 3, 32, 32)`` in [0, 1], ``labels``, ``fonts`` (the "family style" names used),
    ``cache`` (the file)."""
    fonts = usable_fonts()
    if not fonts:
        raise RuntimeError("no usable font found (not even matplotlib's DejaVu)")
    digest = hashlib.sha256(json.dumps([VERSION, n, seed, CLASSES, [f[1] for f in fonts]]).encode()).hexdigest()
    path = os.path.join(cache_dir(), "tta_wild", f"chars-{n}-{seed}-{digest[:12]}.npz")
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
    else:
        images, labels = render(n, seed, fonts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, images=images, labels=labels)
        os.replace(tmp, path)
    return {"images": images.astype(np.float32) / 255.0, "labels": labels, "fonts": [f[1] for f in fonts],
            "cache": path}


def corrupt_rgb(images: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """Corrupt ``(N, 3, H, W)`` images in [0, 1] channel by channel (see the module
    docstring for which draws are shared between channels)."""
    n, c, h, w = images.shape
    if name in PIXEL_NOISE:
        return corrupt(images.reshape(n * c, h, w), name, severity, seed).reshape(n, c, h, w)
    return np.stack([corrupt(images[:, k], name, severity, seed) for k in range(c)], axis=1)
