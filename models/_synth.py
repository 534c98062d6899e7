"""Deterministic text-like images for the PP-OCR models (calibration data and sample inputs).

Pure NumPy, so the pictures depend only on the seed, not on fonts or an imaging library:
dark "glyphs" made of 2-4 thick strokes on a light, shaded, slightly noisy background.
Normalization follows PaddleOCR's inference preprocessing:

    cls: x = (pixel/255 - 0.5) / 0.5, resized to height 48 and right-padded with 0 to width 192
    det: x = (pixel/255 - mean) / std, mean = (0.485, 0.456, 0.406), std = (0.229, 0.224, 0.225)

All images are x_nchw float32 [1, 3, H, W].
"""
import numpy as np

DET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
DET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _background(rng, h, w) -> np.ndarray:
    """Light paper: float [h, w, 3] in 0..255 with a linear shading and a colour tint."""
    base = rng.uniform(170, 245)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = base + rng.uniform(-20, 20) * gy / h + rng.uniform(-20, 20) * gx / w
    tint = rng.uniform(-8, 8, size=3)
    return np.clip(shade[:, :, None] + tint, 0, 255)


def _stroke(img, p0, p1, thickness, ink):
    """Draw a straight line from p0 to p1 (y, x) with a square pen of side 2*thickness+1."""
    n = int(max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1]))) + 1
    ys = np.rint(np.linspace(p0[0], p1[0], n)).astype(int)
    xs = np.rint(np.linspace(p0[1], p1[1], n)).astype(int)
    h, w = img.shape[:2]
    for dy in range(-thickness, thickness + 1):
        for dx in range(-thickness, thickness + 1):
            img[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)] = ink


def _text_line(img, rng, top, left, height, width):
    """Fill the box (top, left, height, width) of img with a row of stroke glyphs."""
    ink = rng.uniform(0, 90) + rng.uniform(-10, 10, size=3)
    thickness = max(0, height // 14)
    x = left
    while True:
        cw = int(height * rng.uniform(0.45, 0.9))
        if x + cw > left + width:
            break
        y0, y1, x0, x1 = top + height * 0.15, top + height * 0.85, x, x + cw - 1
        for _ in range(rng.integers(2, 5)):
            kind = rng.integers(0, 4)
            if kind == 0:  # horizontal bar
                yy = rng.uniform(y0, y1)
                _stroke(img, (yy, x0), (yy, x1), thickness, ink)
            elif kind == 1:  # vertical bar
                xx = rng.uniform(x0, x1)
                _stroke(img, (y0, xx), (y1, xx), thickness, ink)
            else:  # diagonal
                _stroke(img, (y0, rng.uniform(x0, x1)), (y1, rng.uniform(x0, x1)), thickness, ink)
        x += cw + int(height * rng.uniform(0.05, 0.2))
        if rng.random() < 0.15:  # word gap
            x += height // 2


def _finish(img, rng) -> np.ndarray:
    img = img + rng.normal(0, 4, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.float32)


def cls_image(rng) -> np.ndarray:
    """One text-line crop for the direction classifier: [1, 3, 48, 192], half of them rotated 180°."""
    h, w = 48, int(rng.integers(96, 193))
    img = _background(rng, h, w)
    _text_line(img, rng, 4, 4, h - 8, w - 8)
    img = _finish(img, rng)
    if rng.random() < 0.5:
        img = img[::-1, ::-1]
    x = np.zeros((1, 3, 48, 192), np.float32)
    x[0, :, :, :w] = ((img / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
    return x


def det_image(rng, size=160) -> np.ndarray:
    """One page-like image for the text detector: [1, 3, size, size] (size a multiple of 32)."""
    img = _background(rng, size, size)
    top = int(rng.integers(4, 16))
    while True:
        lh = int(rng.integers(12, 28))
        if top + lh > size - 4:
            break
        left = int(rng.integers(4, size // 3))
        _text_line(img, rng, top, left, lh, int(rng.integers(size // 4, size - left - 4)))
        top += lh + int(rng.integers(4, 20))
    img = _finish(img, rng)
    x = (img / 255.0 - DET_MEAN) / DET_STD
    return x.transpose(2, 0, 1)[None].astype(np.float32)
