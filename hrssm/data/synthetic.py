"""A synthetic twin of Waterbirds, generated offline and deterministically from a seed.

Two bird classes that differ in shape first and colour second (landbird: plump body, short neck, short beak, warm
colours; waterbird: long body, long S-shaped neck, long beak, long legs, white/gray/black), drawn with a random pose,
size and position on two background families with texture (land: broadleaf or bamboo forest; water: ocean or lake).
The group structure is the real one (train 95% "own" background, val/test balanced within class), so a model that
reads only the background gets high train accuracy and a poor worst group.

Every image has two independent random streams, one for the bird and one for the background, both derived from
(seed, split, index): the same bird can be re-drawn on another background (a counterfactual pair).
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .._io import atomic_directory
from .schema import COLUMNS, FEATURES, LABEL_NAMES, SPLITS, group_of, scaled_group_counts

_SPLIT_CODE = {s: i for i, s in enumerate(SPLITS)}
LAND_KINDS = ("broadleaf_forest", "bamboo_forest")
WATER_KINDS = ("ocean", "natural_lake")

# Base colours (RGB in [0, 1]); each bird jitters them.
_LANDBIRD_COLOURS = [(0.45, 0.30, 0.15), (0.70, 0.32, 0.12), (0.75, 0.16, 0.10), (0.85, 0.70, 0.15),
                     (0.45, 0.45, 0.20), (0.20, 0.35, 0.70)]
_WATERBIRD_COLOURS = [(0.93, 0.93, 0.90), (0.70, 0.72, 0.75), (0.35, 0.37, 0.40), (0.10, 0.10, 0.12),
                      (0.50, 0.55, 0.65)]
_BEAK_COLOURS = [(0.95, 0.75, 0.10), (0.90, 0.45, 0.10), (0.15, 0.12, 0.10), (0.55, 0.50, 0.45)]


@dataclass(frozen=True)
class BirdSpec:
    """Everything needed to draw one bird; positions and sizes are fractions of the image side."""

    label: int
    body: tuple[float, float, float]
    wing: tuple[float, float, float]
    head: tuple[float, float, float]
    beak: tuple[float, float, float]
    body_rx: float
    body_ry: float
    neck: float  # neck length factor (waterbird) / head offset (landbird)
    beak_len: float
    size: float  # sprite side / image side
    angle: float  # degrees
    flip: bool
    cx: float
    cy: float
    texture_seed: int


def _jitter(rng: np.random.Generator, colour, amount: float = 0.06) -> tuple[float, float, float]:
    c = np.clip(np.asarray(colour) + rng.uniform(-amount, amount, 3), 0.0, 1.0)
    return tuple(float(v) for v in c)


OWN_PALETTE_P = 0.75  # the share of birds coloured from their own class's palette; the rest take the other's


def _draws_own_palette(rng: np.random.Generator) -> bool:
    """The first draw of a bird's stream: its own class's colours, or the other class's."""
    return bool(rng.random() < OWN_PALETTE_P)


def sample_bird(rng: np.random.Generator, label: int) -> BirdSpec:
    """Draw the random attributes of a bird of class `label` (0 landbird, 1 waterbird)."""
    # Colours overlap between classes some of the time, so shape is what reliably separates them.
    own, other = (_LANDBIRD_COLOURS, _WATERBIRD_COLOURS) if label == 0 else (_WATERBIRD_COLOURS, _LANDBIRD_COLOURS)
    palette = own if _draws_own_palette(rng) else other
    body = _jitter(rng, palette[rng.integers(len(palette))])
    wing = _jitter(rng, tuple(v * rng.uniform(0.45, 0.8) for v in body))
    head = body if rng.random() < 0.6 else _jitter(rng, palette[rng.integers(len(palette))])
    beak = _jitter(rng, _BEAK_COLOURS[rng.integers(len(_BEAK_COLOURS))], 0.04)
    if label == 0:
        body_rx, body_ry = rng.uniform(0.19, 0.24), rng.uniform(0.15, 0.19)
        neck, beak_len = rng.uniform(0.0, 0.04), rng.uniform(0.06, 0.1)
    else:
        body_rx, body_ry = rng.uniform(0.22, 0.27), rng.uniform(0.08, 0.11)
        neck, beak_len = rng.uniform(0.8, 1.15), rng.uniform(0.15, 0.22)
    return BirdSpec(
        label=int(label), body=body, wing=wing, head=head, beak=beak, body_rx=float(body_rx),
        body_ry=float(body_ry), neck=float(neck), beak_len=float(beak_len), size=float(rng.uniform(0.5, 0.75)),
        angle=float(rng.uniform(-25, 25)), flip=bool(rng.random() < 0.5), cx=float(rng.uniform(0.35, 0.65)),
        cy=float(rng.uniform(0.4, 0.62)), texture_seed=int(rng.integers(2**31)),
    )


def _rgb255(c) -> tuple[int, int, int]:
    return tuple(int(round(v * 255)) for v in c)  # type: ignore[return-value]


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells_y: int, cells_x: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid upsampled bicubically."""
    grid = rng.random((cells_y, cells_x)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((width, height), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(img), 0.0, 1.0)


def draw_bird(spec: BirdSpec, image_size: int) -> Image.Image:
    """The bird as an RGBA sprite (square, side spec.size * image_size before rotation), drawn at 2x and downsampled."""
    side = max(8, int(round(spec.size * image_size)))
    s = 2 * side  # supersampled canvas
    sprite = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(sprite)

    def P(x: float, y: float) -> tuple[float, float]:
        return x * s, y * s

    def ellipse(cx: float, cy: float, rx: float, ry: float, colour) -> None:
        d.ellipse([P(cx - rx, cy - ry), P(cx + rx, cy + ry)], fill=_rgb255(colour) + (255,))

    leg = _rgb255(tuple(v * 0.5 for v in spec.beak)) + (255,)
    width = max(1, int(0.012 * s))
    if spec.label == 0:  # landbird: plump body, tail, round head close to the body, short beak, short legs
        bx, by = 0.45, 0.58
        d.line([P(bx - 0.03, by + 0.12), P(bx - 0.04, by + 0.25)], fill=leg, width=width)
        d.line([P(bx + 0.04, by + 0.12), P(bx + 0.05, by + 0.25)], fill=leg, width=width)
        d.polygon([P(bx - spec.body_rx + 0.04, by - 0.02), P(0.04, by - 0.12), P(0.06, by + 0.06)],
                  fill=_rgb255(spec.wing) + (255,))
        ellipse(bx, by, spec.body_rx, spec.body_ry, spec.body)
        breast = tuple(min(1, v * 1.25) for v in spec.body)
        ellipse(bx + 0.05, by + 0.06, spec.body_rx * 0.6, spec.body_ry * 0.55, breast)
        ellipse(bx - 0.03, by - 0.01, spec.body_rx * 0.7, spec.body_ry * 0.55, spec.wing)
        hx, hy, hr = bx + spec.body_rx * 0.95 + spec.neck, by - spec.body_ry * 0.95, 0.1
        ellipse(hx, hy, hr, hr, spec.head)
        d.polygon([P(hx + hr * 0.85, hy - 0.03), P(hx + hr * 0.85, hy + 0.03), P(hx + hr + spec.beak_len, hy + 0.005)],
                  fill=_rgb255(spec.beak) + (255,))
        ellipse(hx + hr * 0.35, hy - hr * 0.25, 0.018, 0.018, (0.02, 0.02, 0.02))
    else:  # waterbird: long body, long S-shaped neck, small head, long beak, long legs
        bx, by = 0.38, 0.6
        d.line([P(bx - 0.02, by + 0.06), P(bx - 0.04, by + 0.37)], fill=leg, width=width)
        d.line([P(bx + 0.05, by + 0.06), P(bx + 0.06, by + 0.37)], fill=leg, width=width)
        d.polygon([P(bx - spec.body_rx + 0.03, by - 0.02), P(bx - spec.body_rx - 0.1, by - 0.05),
                   P(bx - spec.body_rx - 0.08, by + 0.04)], fill=_rgb255(spec.wing) + (255,))
        ellipse(bx, by, spec.body_rx, spec.body_ry, spec.body)
        ellipse(bx - 0.04, by - 0.01, spec.body_rx * 0.75, spec.body_ry * 0.6, spec.wing)
        n = spec.neck
        neck_pts = [P(bx + spec.body_rx * 0.75, by - 0.02), P(bx + spec.body_rx + 0.06, by - 0.16 * n),
                    P(bx + spec.body_rx + 0.02, by - 0.3 * n), P(bx + spec.body_rx + 0.05, by - 0.4 * n)]
        d.line(neck_pts, fill=_rgb255(spec.body) + (255,), width=max(2, int(0.06 * s)), joint="curve")
        hx, hy = bx + spec.body_rx + 0.07, by - 0.4 * n - 0.02
        ellipse(hx, hy, 0.065, 0.05, spec.head)
        d.polygon([P(hx + 0.05, hy - 0.015), P(hx + 0.05, hy + 0.02), P(hx + 0.05 + spec.beak_len, hy + 0.015)],
                  fill=_rgb255(spec.beak) + (255,))
        ellipse(hx + 0.02, hy - 0.015, 0.014, 0.014, (0.02, 0.02, 0.02))

    # Feather texture: modulate the colours (not the alpha) by smooth noise.
    arr = np.asarray(sprite).astype(np.float32)
    tex = _smooth_noise(np.random.default_rng(spec.texture_seed), s, s, 12, 12)
    arr[..., :3] *= (0.85 + 0.3 * tex)[..., None]
    sprite = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="RGBA")
    if spec.flip:
        sprite = sprite.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    sprite = sprite.rotate(spec.angle, resample=Image.Resampling.BICUBIC, expand=True)
    return sprite.resize((sprite.width // 2, sprite.height // 2), Image.Resampling.LANCZOS)


def _vertical_gradient(n: int, top, bottom, start: int = 0, stop: int | None = None) -> np.ndarray:
    stop = n if stop is None else stop
    t = np.linspace(0.0, 1.0, max(1, stop - start), dtype=np.float32)[:, None, None]
    return (1 - t) * np.asarray(top, np.float32) + t * np.asarray(bottom, np.float32)


def sample_background(rng: np.random.Generator, place: int, image_size: int) -> tuple[np.ndarray, str]:
    """A textured background (uint8 HWC) of family `place` (0 land, 1 water) and the name of its kind."""
    n = image_size
    kinds = LAND_KINDS if place == 0 else WATER_KINDS
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "ocean" or kind == "natural_lake":
        horizon = int(n * rng.uniform(0.2, 0.42))
        img = np.empty((n, n, 3), np.float32)
        img[:horizon] = _vertical_gradient(n, _jitter(rng, (0.45, 0.65, 0.92)), _jitter(rng, (0.82, 0.88, 0.95)),
                                           0, horizon)
        water_top = (0.12, 0.38, 0.62) if kind == "ocean" else (0.15, 0.42, 0.42)
        water_bottom = (0.02, 0.14, 0.35) if kind == "ocean" else (0.05, 0.22, 0.22)
        img[horizon:] = _vertical_gradient(n, _jitter(rng, water_top), _jitter(rng, water_bottom), horizon, n)
        streaks = _smooth_noise(rng, n - horizon, n, max(4, (n - horizon) // 3), 3)  # horizontal waves
        img[horizon:] *= (0.75 + 0.5 * streaks)[..., None]
        pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
        d = ImageDraw.Draw(pil)
        if kind == "natural_lake":  # a dark tree line on the far shore and its reflection
            ridge = _smooth_noise(rng, 1, n, 1, 8)[0]
            tops = horizon - (0.04 + 0.1 * ridge) * n
            shore = _rgb255(_jitter(rng, (0.12, 0.28, 0.12)))
            d.polygon([(0, horizon)] + [(x, float(tops[x])) for x in range(n)] + [(n - 1, horizon)], fill=shore)
            d.rectangle([0, horizon, n, horizon + max(1, n // 40)], fill=_rgb255((0.08, 0.2, 0.15)))
        for _ in range(int(rng.integers(6, 14))):  # wave crests
            y = float(rng.uniform(horizon + 2, n))
            x = float(rng.uniform(-0.2, 1.0) * n)
            half = float(rng.uniform(0.05, 0.25) * n)
            d.line([(x, y), (x + half, y + rng.uniform(-1, 1))], fill=_rgb255(_jitter(rng, (0.8, 0.88, 0.92))),
                   width=max(1, n // 96))
        for _ in range(int(rng.integers(0, 4))):  # clouds
            cx, cy, r = rng.uniform(0, n), rng.uniform(0, horizon * 0.8), rng.uniform(0.04, 0.1) * n
            d.ellipse([cx - 2 * r, cy - r, cx + 2 * r, cy + r], fill=_rgb255(_jitter(rng, (0.95, 0.96, 0.97), 0.03)))
        pil = pil.filter(ImageFilter.GaussianBlur(radius=n / 256))
        return np.asarray(pil), kind

    # Land: a forest, foliage noise under trunks or bamboo stalks, then a ground band.
    base = (0.25, 0.45, 0.18) if kind == "broadleaf_forest" else (0.45, 0.55, 0.22)
    img = _vertical_gradient(n, _jitter(rng, (0.55, 0.68, 0.4)), _jitter(rng, base)).repeat(n, axis=1)
    img = img * (0.6 + 0.7 * _smooth_noise(rng, n, n, 7, 7))[..., None]
    pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
    d = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(25, 45))):  # leaf blobs
        cx, cy, r = rng.uniform(0, n), rng.uniform(0, 0.8 * n), rng.uniform(0.02, 0.07) * n
        d.ellipse([cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r],
                  fill=_rgb255(_jitter(rng, (0.2 + 0.2 * rng.random(), 0.4 + 0.2 * rng.random(), 0.12), 0.04)))
    if kind == "broadleaf_forest":
        for _ in range(int(rng.integers(2, 6))):
            x, w = rng.uniform(0, n), rng.uniform(0.03, 0.08) * n
            tilt = rng.uniform(-0.05, 0.05) * n
            d.polygon([(x, 0), (x + w, 0), (x + w + tilt, n), (x + tilt, n)],
                      fill=_rgb255(_jitter(rng, (0.3, 0.2, 0.12), 0.05)))
    else:
        for _ in range(int(rng.integers(7, 14))):
            x, w = rng.uniform(0, n), max(1.0, rng.uniform(0.015, 0.035) * n)
            stalk = _jitter(rng, (0.55, 0.65, 0.25), 0.05)
            d.rectangle([x, 0, x + w, n], fill=_rgb255(stalk))
            for y in np.arange(rng.uniform(0, 0.15) * n, n, rng.uniform(0.1, 0.16) * n):
                d.rectangle([x, y, x + w, y + max(1, n // 128)], fill=_rgb255(tuple(v * 0.6 for v in stalk)))
    ground = int(n * rng.uniform(0.78, 0.9))
    d.rectangle([0, ground, n, n], fill=_rgb255(_jitter(rng, (0.35, 0.3, 0.15))))
    arr = np.asarray(pil).astype(np.float32) * (0.85 + 0.3 * _smooth_noise(rng, n, n, n // 4, n // 4))[..., None]
    pil = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius=n / 256))
    return np.asarray(pil), kind


def render(bird: BirdSpec, background: np.ndarray) -> np.ndarray:
    """Composite `bird` onto a uint8 HWC background; returns a new uint8 HWC image."""
    n = background.shape[0]
    canvas = Image.fromarray(background).convert("RGBA")
    sprite = draw_bird(bird, n)
    x, y = int(round(bird.cx * n - sprite.width / 2)), int(round(bird.cy * n - sprite.height / 2))
    canvas.alpha_composite(sprite, dest=(max(0, x), max(0, y)), source=(max(0, -x), max(0, -y)))
    return np.asarray(canvas.convert("RGB"))


def example_rngs(seed: int, split: str, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The independent (bird, background) random streams of image `index` of `split`."""
    key = [int(seed), _SPLIT_CODE[split], int(index)]
    return np.random.default_rng(key + [0]), np.random.default_rng(key + [1])


def own_palette(split: str, count: int, seed: int = 0) -> np.ndarray:
    """(count,) bool: whether bird k of `split` (rows in generation order, the twin of `seed`) is coloured from its
    own class's palette (True, ~75%) or from the other class's (False): there only its shape tells its class."""
    return np.array([_draws_own_palette(example_rngs(seed, split, k)[0]) for k in range(count)], dtype=bool)


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def make_example(seed: int, split: str, index: int, label: int, place: int, image_size: int,
                 quality: int = 95) -> tuple[bytes, str]:
    """JPEG bytes of one synthetic image and the kind of its background."""
    bird_rng, bg_rng = example_rngs(seed, split, index)
    background, kind = sample_background(bg_rng, place, image_size)
    return encode_jpeg(render(sample_bird(bird_rng, label), background), quality), kind


def _make_chunk(args: tuple) -> list[tuple[bytes, str]]:
    seed, split, rows, image_size, quality = args
    return [make_example(seed, split, i, label, place, image_size, quality) for i, label, place in rows]


def plan_split(split: str, scale: float, seed: int) -> list[tuple[int, int]]:
    """The shuffled (label, place) of every image of `split`, with the real group counts times `scale`."""
    counts = scaled_group_counts(split, scale)
    pairs = [(g // 2, g % 2) for g, c in enumerate(counts) for _ in range(c)]
    order = np.random.default_rng([int(seed), _SPLIT_CODE[split], 99]).permutation(len(pairs))
    return [pairs[i] for i in order]


def generate(image_size: int = 64, scale: float = 1.0, seed: int = 0, workers: int | None = None,
             quality: int = 95, progress: bool = True) -> dict[str, dict[str, list]]:
    """Generate all splits in memory: {split: {column: values}} with the schema columns plus bookkeeping."""
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 to draw a recognisable bird, got {image_size}")
    workers = workers or min(8, os.cpu_count() or 1)
    from tqdm.auto import tqdm

    columns: dict[str, dict[str, list]] = {}
    next_id = 1
    for split in SPLITS:
        plan = plan_split(split, scale, seed)
        rows = [(i, label, place) for i, (label, place) in enumerate(plan)]
        chunk = 64
        jobs = [(seed, split, rows[k : k + chunk], image_size, quality) for k in range(0, len(rows), chunk)]
        bar = tqdm(total=len(rows), desc=f"synthetic {split}", disable=not progress, unit="img")
        results: list[tuple[bytes, str]] = []
        if workers == 1:
            for job in jobs:
                results += _make_chunk(job)
                bar.update(len(job[2]))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for part, job in zip(pool.map(_make_chunk, jobs), jobs):
                    results += part
                    bar.update(len(job[2]))
        bar.close()
        ids = list(range(next_id, next_id + len(rows)))
        next_id += len(rows)
        columns[split] = {
            "image": [{"bytes": b, "path": None} for b, _ in results],
            "label": [label for label, _ in plan],
            "place": [place for _, place in plan],
            "group": [group_of(label, place) for label, place in plan],
            "split": [split] * len(plan),
            "img_id": ids,
            "img_filename": [f"{LABEL_NAMES[label]}/{i:06d}.jpg" for i, (label, _) in zip(ids, plan)],
            "place_filename": [f"/{kind}/{i:06d}.jpg" for i, (_, kind) in zip(ids, results)],
        }
    return columns


def train_images(count: int, image_size: int, scale: float, seed: int = 0):
    """The first `count` train images of the twin of (`scale`, `seed`), made in memory (one process) and preprocessed
    as model input: (count, 3, image_size, image_size) float32 in [-0.5, 0.5]. For quick checks that need no dataset
    on disk (tools/overfit_check.py, tools/gradient_balance.py)."""
    from .preprocess import preprocess

    columns = generate(image_size=image_size, scale=scale, seed=seed, workers=1, progress=False)
    return preprocess([Image.open(io.BytesIO(b["bytes"])) for b in columns["train"]["image"][:count]], image_size)


def write_save_to_disk(columns: dict[str, dict[str, list]], out: str | os.PathLike, overwrite: bool = False):
    """Write generated splits as a `save_to_disk` DatasetDict (atomically: a temp folder renamed into place)."""
    from datasets import Dataset, DatasetDict

    out = Path(out)
    _check_target(out, overwrite)
    dd = DatasetDict({s: Dataset.from_dict({c: cols[c] for c in COLUMNS}, features=FEATURES)
                      for s, cols in columns.items()})
    with atomic_directory(out) as work:
        dd.save_to_disk(str(work))
    return dd


def write_original_folder(columns: dict[str, dict[str, list]], out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write generated splits in the original Waterbirds layout: ``metadata.csv`` + one JPEG per image."""
    out = Path(out)
    _check_target(out, overwrite)
    with atomic_directory(out) as work:
        lines = ["img_id,img_filename,y,split,place,place_filename"]
        for split, cols in columns.items():
            for k, name in enumerate(cols["img_filename"]):
                path = work / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(cols["image"][k]["bytes"])
                lines.append(f"{cols['img_id'][k]},{name},{cols['label'][k]},{_SPLIT_CODE[split]},"
                             f"{cols['place'][k]},{cols['place_filename'][k]}")
        work.mkdir(exist_ok=True)
        (work / "metadata.csv").write_text("\n".join(lines) + "\n")
    return out


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists: pass overwrite=True (--overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)


def group_table(counts: dict[str, tuple[int, ...]]) -> str:
    """A small text table of per-split group counts."""
    from .schema import GROUP_NAMES

    head = f"{'split':<11}" + "".join(f"{g:>17}" for g in GROUP_NAMES) + f"{'total':>8}"
    rows = [f"{s:<11}" + "".join(f"{c:>17}" for c in cs) + f"{sum(cs):>8}" for s, cs in counts.items()]
    return "\n".join([head, *rows])
