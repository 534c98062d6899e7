"""Rendered text-line crops with direction labels, for the PP-OCR text-direction classifier.

    render_set(count, seed, words=EVAL_WORDS) -> (images [H x W x 3 uint8 RGB], labels int64 [count])
    preprocess(images)          -> x float32 [N, 3, 48, 192], rapidocr's TextClassifier input
    eval_set(count=400, seed=0) -> (x, labels)    the evaluation set
    calib_set(count=64, seed=1000) -> x           calibration feeds (other words, other seed)
    accuracy(scores, labels)    -> top-1 accuracy of [N, 2] logits or probabilities

Label 0 is an upright line, label 1 the same kind of line rotated by 180°, the classifier's
labels ["0", "180"]; every set holds count // 2 rotated lines (so it is balanced; an odd count
has one more upright line) in a seeded random order.

Each line is a string of 3..30 characters (words from a fixed list, numbers, punctuation),
drawn with Pillow in a TrueType font at 16..40 px, dark grey on light grey (small per-channel
tint), cropped as a text detector crops: the ink box plus a few pixels of margin; then
optionally a slight Gaussian blur and pixel noise. Fonts: the DejaVu, STIX and Computer Modern
faces matplotlib ships (mpl-data/fonts/ttf) and Pillow's built-in scalable font; Pillow's
FreeType rendering and OpenCV's resize make the pixels, and everything random comes from one
numpy Generator seeded by `seed`, so a set is identical for the same (count, seed) and the same
Pillow / FreeType / matplotlib / OpenCV versions. Rendering 400 lines takes about a second.

The evaluation and calibration sets draw their words from two disjoint halves of the word
list and use different seeds, so calibration never sees an evaluation string's words.
"""
import functools
import math
import pathlib

import numpy as np

CLS_SHAPE = (3, 48, 192)  # rapidocr config.yaml Cls.cls_image_shape
MAX_CHARS = 30
MIN_CHARS = 3

# Faces of matplotlib's mpl-data/fonts/ttf; None is Pillow's built-in scalable font.
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf",
    "cmss10.ttf", "cmtt10.ttf", None,
)

_WORDS = """
the of and to in is that for it as was with be by on not he this are or his from at which
but have an they you were her she there been one all we their has would when if so no will
more out up into do any your what some them other than then only its time these two may first
new also after made many over such where most should through well years world could great
state people between under never same another know while last might public found system
number water order house point small place group during without again power money market
report company account invoice total amount payment customer service address street city
station office hospital school library museum airport bridge river garden village north south
east west center central national general federal council street avenue road lane square
monday tuesday wednesday thursday friday saturday sunday january february march april june
july august september october november december morning evening tonight weekend holiday
price sale discount offer free open closed entrance exit parking ticket receipt change cash
card bank loan rate interest balance credit debit transfer deposit number phone email website
welcome thank please sorry hello goodbye name date signature page section chapter figure table
model version release update download install settings profile password login logout search
coffee bread milk butter cheese apple orange banana tomato potato chicken salad soup pizza
train platform departure arrival delay gate flight seat window aisle luggage passport visa
doctor patient nurse pharmacy medicine dose tablet morning daily warning danger caution notice
""".split()
_WORDS = list(dict.fromkeys(_WORDS))  # unique, first-seen order
EVAL_WORDS = tuple(_WORDS[0::2])
CALIB_WORDS = tuple(_WORDS[1::2])

_PUNCT = (",", ".", ":", ";", "!", "?", "-", "/", "&", "#", "%", "(", ")", "'", '"', "+", "=", "*")


@functools.lru_cache(maxsize=None)
def _font(index: int, size: int):
    from PIL import ImageFont

    name = FONT_FILES[index]
    if name is None:
        return ImageFont.load_default(size)
    return ImageFont.truetype(str(_font_dir() / name), size)


@functools.lru_cache(maxsize=1)
def _font_dir() -> pathlib.Path:
    try:
        import matplotlib
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("the rendered text lines use the fonts matplotlib ships "
                                  "(pip install matplotlib)") from e
    return pathlib.Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _token(rng, words) -> str:
    """One word (lower, Capitalized or UPPER), number, or number-like code."""
    kind = rng.random()
    if kind < 0.65:
        w = words[rng.integers(len(words))]
        case = rng.random()
        return w.upper() if case < 0.15 else w.capitalize() if case < 0.45 else w
    if kind < 0.8:
        return str(int(rng.integers(0, 10 ** int(rng.integers(1, 6)))))
    if kind < 0.9:
        return f"{rng.uniform(0, 1000):.{int(rng.integers(1, 3))}f}"
    d = rng.integers(1, 29, size=3)
    return f"{d[0]:02d}/{d[1] % 12 + 1:02d}/{2000 + d[2]}"


def _string(rng, words) -> str:
    """A line of MIN_CHARS..MAX_CHARS characters: tokens with spaces and punctuation."""
    target = int(rng.integers(MIN_CHARS, MAX_CHARS + 1))
    s = _token(rng, words)
    while len(s) < target:
        r = rng.random()
        sep = " " if r < 0.7 else _PUNCT[rng.integers(3)] + " " if r < 0.9 else " " + _PUNCT[rng.integers(3, len(_PUNCT))] + " "
        s += sep + _token(rng, words)
    s = s[:target].strip()
    if len(s) < MIN_CHARS:  # the cut left a space at the end: pad with a digit
        s = (s + "0" * MIN_CHARS)[:MIN_CHARS]
    if rng.random() < 0.2:
        s = s[:-1] + _PUNCT[rng.integers(len(_PUNCT))] if len(s) == MAX_CHARS else s + _PUNCT[rng.integers(len(_PUNCT))]
    return s


def _render_line(rng, text) -> np.ndarray:
    """`text` as a crop: H x W x 3 uint8 RGB, upright, the ink box plus 0..10 px margins."""
    from PIL import Image, ImageDraw, ImageFilter

    font = _font(int(rng.integers(len(FONT_FILES))), int(rng.integers(12, 41)))
    left, top, right, bottom = font.getbbox(text)  # ink box relative to the draw origin
    mx = int(rng.integers(1, 11))
    my_top, my_bottom = (int(m) for m in rng.integers(0, 8, size=2))
    w, h = right - left + 2 * mx, bottom - top + my_top + my_bottom
    bg = int(rng.integers(150, 256))
    fg = int(rng.integers(0, bg - 50))
    if rng.random() < 0.1:  # light text on a dark background
        bg, fg = 255 - bg, 255 - fg
    img = Image.new("L", (w, h), bg)
    ImageDraw.Draw(img).text((mx - left, my_top - top), text, fill=fg, font=font)
    if rng.random() < 0.3:  # a crop that is not quite level
        img = img.rotate(float(rng.uniform(-2, 2)), resample=Image.BILINEAR, fillcolor=bg)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.5))))
    px = np.asarray(img, np.float32)[:, :, None] + rng.uniform(-10, 10, size=3).astype(np.float32)
    px = px + rng.normal(0, rng.uniform(0, 12), size=px.shape).astype(np.float32)
    return np.clip(np.rint(px), 0, 255).astype(np.uint8)


def render_set(count: int, seed: int, words=EVAL_WORDS) -> tuple[list[np.ndarray], np.ndarray]:
    """`count` text-line crops and their labels (0 upright, 1 rotated 180°), count // 2 of them
    rotated; the same (count, seed, words) gives identical arrays."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) < count // 2).astype(np.int64)
    images = []
    for lab in labels:
        img = _render_line(rng, _string(rng, words))
        images.append(np.ascontiguousarray(img[::-1, ::-1]) if lab else img)
    return images, labels


def preprocess(images) -> np.ndarray:
    """RGB uint8 crops -> x float32 [N, 3, 48, 192], as rapidocr 1.4.4's TextClassifier.resize_norm_img.

    rapidocr hands the classifier BGR images (its LoadImage turns every input into OpenCV's BGR),
    so the channels are reversed first. Then: width w' = min(192, ceil(48 * w / h)), cv2.resize
    to (w', 48) (bilinear), x = (pixel / 255 - 0.5) / 0.5 in float32, right-padded with 0.
    """
    import cv2

    c, h_out, w_out = CLS_SHAPE
    x = np.zeros((len(images), c, h_out, w_out), np.float32)
    for i, img in enumerate(images):
        bgr = np.ascontiguousarray(img[:, :, ::-1])
        h, w = bgr.shape[:2]
        resized_w = min(w_out, int(math.ceil(h_out * w / float(h))))
        r = cv2.resize(bgr, (resized_w, h_out)).astype(np.float32).transpose(2, 0, 1) / 255
        r -= 0.5
        r /= 0.5
        x[i, :, :, :resized_w] = r
    return x


def eval_set(count: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation set: (x float32 [count, 3, 48, 192], labels int64 [count])."""
    images, labels = render_set(count, seed, EVAL_WORDS)
    return preprocess(images), labels


def calib_set(count: int = 64, seed: int = 1000) -> np.ndarray:
    """Calibration inputs x float32 [count, 3, 48, 192] (words disjoint from eval_set's)."""
    return preprocess(render_set(count, seed, CALIB_WORDS)[0])


def accuracy(scores, labels) -> float:
    """Top-1 accuracy: the fraction of rows of scores [N, 2] whose argmax equals labels [N]."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 2 or scores.shape[0] != labels.shape[0]:
        raise ValueError(f"accuracy: scores {scores.shape} do not match labels {labels.shape}")
    return float(np.mean(np.argmax(scores, axis=1) == labels))
