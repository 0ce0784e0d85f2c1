"""Procedurally drawn shapes with English captions: the data of the tiny-shapes CLIP.

Each image shows one to three upright shapes of one kind and one colour, grouped in one region of a
light, lightly noisy background; its caption names the count and some of colour, shape and position
("a photo of two red circles", "three blue squares on the left", "a yellow triangle.").
Shapes are drawn at 4x and box-downsampled, so edges are anti-aliased. All randomness comes from
one numpy Generator: a seed gives the same images and captions on every run.

Images are 64x64: the smallest size at which a 10-pixel star is still a star, and 8x8 patches
then give the vision tower an 8x8 grid, cheap enough to train on one CPU thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64  # output image side, pixels
SCALE = 4  # drawing supersampling factor

COLOURS = {  # name -> base RGB (each image jitters it by up to +-JITTER per channel)
    "red": (215, 35, 35),
    "green": (40, 165, 55),
    "blue": (35, 75, 220),
    "yellow": (240, 210, 25),
    "purple": (140, 55, 185),
    "orange": (250, 135, 25),
}
JITTER = 18
SHAPES = ["circle", "square", "triangle", "star", "cross"]
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars",
          "cross": "crosses", "shape": "shapes"}
COUNTS = {1: ["a", "one"], 2: ["two"], 3: ["three"]}
COUNT_NAMES = {1: "one", 2: "two", 3: "three"}
POSITIONS = {  # name -> (box x0, y0, x1, y1) each shape's bounding box stays in, and the phrases
    "left": ((2, 8, 30, 56), ["on the left", "at the left"]),
    "right": ((34, 8, 62, 56), ["on the right", "at the right"]),
    "top": ((8, 2, 56, 30), ["at the top", "on the top"]),
    "bottom": ((8, 34, 56, 62), ["at the bottom", "on the bottom"]),
    "center": ((12, 12, 52, 52), ["in the center", "in the middle"]),
}
# Rotation of a group of shapes and of each shape, radians. Shapes are upright: with up to 20 degrees
# of tilt the from-scratch ViT learned shapes far slower (a supervised probe of the vision tower: 58%
# instead of 77% shape accuracy after 300 steps), too slow for the CPU budget.
TILT, TILT_EACH = 0.0, 0.0
SIZES = {1: (16, 26), 2: (12, 21), 3: (10, 17)}  # count -> shape size range (pixels at 64x64)
PREFIXES = ["", "", "a photo of ", "a picture of ", "a drawing of ", "an image of ", "there {be} "]


@dataclass
class Sample:
    """One image, its true attributes, its caption and which attributes the caption names."""

    image: Image.Image  # RGB, SIZE x SIZE
    count: int
    colour: str
    shape: str
    position: str
    caption: str
    mentioned: tuple  # subset of ("count", "colour", "shape", "position")

    def attributes(self) -> dict:
        return {"count": self.count, "colour": self.colour, "shape": self.shape, "position": self.position}


# --- drawing ------------------------------------------------------------------------------------

def _rotate(points, angle):
    """Rotate [P, 2] offsets by angle (radians) about the origin."""
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]])  # [P, 2]


def shape_outline(shape, size, angle):
    """The polygon of a shape of bounding size `size`, centred on the origin -> [P, 2] offsets."""
    r = size / 2
    if shape == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * r * 0.9
    elif shape == "triangle":
        t = np.pi / 2 + np.arange(3) * 2 * np.pi / 3  # pointing up
        pts = np.stack([np.cos(t), -np.sin(t)], 1) * r + [0, r * 0.2]
    elif shape == "star":
        t = np.pi / 2 + np.arange(10) * np.pi / 5
        radius = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        pts = np.stack([np.cos(t) * radius, -np.sin(t) * radius], 1)
    elif shape == "cross":
        a, b = r, r * 0.34
        pts = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b],
                        [b, a], [-b, a], [-b, b], [-a, b], [-a, -b], [-b, -b]])
    else:
        raise ValueError(f"no outline for {shape!r}")
    return _rotate(pts, angle)


def draw_shape(draw, shape, cx, cy, size, angle, rgb):
    """Draw one filled shape on the supersampled canvas; cx, cy, size are in output pixels."""
    if shape == "circle":
        r = size / 2 * 0.95 * SCALE
        draw.ellipse([cx * SCALE - r, cy * SCALE - r, cx * SCALE + r, cy * SCALE + r], fill=rgb)
        return
    pts = (shape_outline(shape, size, angle) + [cx, cy]) * SCALE
    draw.polygon([tuple(p) for p in pts], fill=rgb)


def place(rng, count, position, size_range, tries=200):
    """Centres and sizes of `count` non-overlapping shapes inside the position's box.

    -> list of (cx, cy, size); sizes shrink if the box is too crowded.
    """
    x0, y0, x1, y1 = POSITIONS[position][0]
    lo, hi = size_range
    for attempt in range(tries):
        shrink = 1 - 0.3 * attempt / tries
        placed = []
        for _ in range(count):
            s = rng.uniform(lo, hi) * shrink
            s = min(s, x1 - x0, y1 - y0)
            cx, cy = rng.uniform(x0 + s / 2, x1 - s / 2), rng.uniform(y0 + s / 2, y1 - s / 2)
            if all(np.hypot(cx - px, cy - py) > (s + ps) / 2 + 1.5 for px, py, ps in placed):
                placed.append((cx, cy, s))
        if len(placed) == count:
            return placed
    raise RuntimeError(f"could not place {count} shapes {position}")


def render(rng, count, colour, shape, position):
    """Draw one image -> PIL RGB image, SIZE x SIZE."""
    grey = rng.uniform(215, 252)
    tint = rng.uniform(-8, 8, size=3)
    background = tuple(int(v) for v in np.clip(grey + tint, 0, 255))
    canvas = Image.new("RGB", (SIZE * SCALE, SIZE * SCALE), background)
    draw = ImageDraw.Draw(canvas)
    rgb = tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + rng.integers(-JITTER, JITTER + 1, 3), 0, 255))
    angle = 0.0 if shape == "circle" else rng.uniform(-TILT, TILT)
    for cx, cy, s in place(rng, count, position, SIZES[count]):
        draw_shape(draw, shape, cx, cy, s, angle + rng.uniform(-TILT_EACH, TILT_EACH), rgb)
    image = canvas.resize((SIZE, SIZE), Image.Resampling.BOX)
    noise = rng.normal(0, rng.uniform(0, 6), size=(SIZE, SIZE, 3))  # [S, S, 3]
    pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).round().astype(np.uint8)
    return Image.fromarray(pixels)


# --- captions -----------------------------------------------------------------------------------

def caption_for(rng, count, colour, shape, position):
    """A random English caption of the scene -> (text, names of the attributes it mentions)."""
    mentioned = ["count"]
    say_colour = rng.random() < 0.8
    say_shape = rng.random() < (0.85 if say_colour else 1.0)  # always name colour or shape
    noun = shape if say_shape else "shape"
    words = [rng.choice(COUNTS[count])]
    if say_colour:
        words.append(colour)
        mentioned.append("colour")
    if say_shape:
        mentioned.append("shape")
    words.append(noun if count == 1 else PLURAL[noun])
    if words[0] == "a" and words[1][0] in "aeiou":
        words[0] = "an"  # "an orange star"
    text = rng.choice(PREFIXES).replace("{be}", "is" if count == 1 else "are") + " ".join(words)
    if rng.random() < 0.5:
        phrase = rng.choice(POSITIONS[position][1])
        text = f"{phrase}, {text}" if rng.random() < 0.2 else f"{text} {phrase}"
        mentioned.append("position")
    if rng.random() < 0.5:
        text += "."
    return text, tuple(mentioned)


def describe(count, colour, shape, position):
    """The plain caption of a scene: "two blue squares on the left"."""
    noun = shape if count == 1 else PLURAL[shape]
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article if count == 1 else COUNT_NAMES[count]} {colour} {noun} {POSITIONS[position][1][0]}"


def random_scene(rng) -> dict:
    """Count, colour, shape and position, each drawn uniformly."""
    return {"count": int(rng.integers(1, 4)), "colour": str(rng.choice(list(COLOURS))),
            "shape": str(rng.choice(SHAPES)), "position": str(rng.choice(list(POSITIONS)))}


VALUES = {"count": [1, 2, 3], "colour": list(COLOURS), "shape": SHAPES, "position": list(POSITIONS)}
TWIN_CHANGES = {"shape": 0.6, "count": 0.2, "colour": 0.1, "position": 0.1}  # which attribute a twin changes


def twin_scene(rng, scene) -> dict:
    """The scene with one attribute changed, mostly the shape: a hard negative for the contrastive loss.

    The changed value is uniform among the others, so a twin is still a uniformly drawn scene.
    """
    key = str(rng.choice(list(TWIN_CHANGES), p=list(TWIN_CHANGES.values())))
    others = [v for v in VALUES[key] if v != scene[key]]
    return {**scene, key: others[int(rng.integers(len(others)))]}


def sample(rng, count=None, colour=None, shape=None, position=None) -> Sample:
    """One scene (attributes not given are drawn uniformly), its image and a random caption."""
    scene = {**random_scene(rng), **{k: v for k, v in dict(count=count, colour=colour, shape=shape,
                                                           position=position).items() if v is not None}}
    return draw_scene(rng, scene)


def draw_scene(rng, scene) -> Sample:
    """Render a scene and caption it."""
    image = render(rng, scene["count"], scene["colour"], scene["shape"], scene["position"])
    text, mentioned = caption_for(rng, scene["count"], scene["colour"], scene["shape"], scene["position"])
    return Sample(image, scene["count"], scene["colour"], scene["shape"], scene["position"], text, mentioned)


def batch(seed, n, twins=False) -> list:
    """n samples from numpy Generator seed `seed` (an int or a sequence of ints).

    twins: draw n // 2 scenes each followed by its twin_scene, so that every batch holds pairs that
    differ in one attribute (training); otherwise n independent scenes (evaluation).
    """
    rng = np.random.default_rng(seed)
    if not twins:
        return [draw_scene(rng, random_scene(rng)) for _ in range(n)]
    scenes = []
    while len(scenes) < n:
        first = random_scene(rng)
        scenes += [first, twin_scene(rng, first)]
    return [draw_scene(rng, s) for s in scenes[:n]]


def matches(samples):
    """Which captions are true of which images: [B captions, B images] bool.

    Caption i is true of image j when every attribute caption i names equals image j's.
    """
    attrs = [s.attributes() for s in samples]
    return np.array([[all(a[k] == b[k] for k in s.mentioned) for b in attrs]
                     for s, a in zip(samples, attrs)])  # [B, B]


# file name -> (count, colour, shape, position): the example images shipped with the checkpoint
EXAMPLES = {
    "red_circle.png": (1, "red", "circle", "center"),
    "two_blue_squares.png": (2, "blue", "square", "left"),
    "three_green_triangles.png": (3, "green", "triangle", "bottom"),
    "yellow_star.png": (1, "yellow", "star", "top"),
    "purple_cross.png": (1, "purple", "cross", "right"),
    "two_orange_stars.png": (2, "orange", "star", "center"),
}


# --- zero-shot labels ---------------------------------------------------------------------------

TEMPLATE = "a photo of a {}."


def class_names(task="colour_shape"):
    """The zero-shot labels of a task: colour_shape ("red circle", ...), colour ("red shape", ...),
    shape ("circle", ...) or count ("one shape", ...)."""
    if task == "colour_shape":
        return [f"{c} {s}" for c in COLOURS for s in SHAPES]
    if task == "colour":
        return [f"{c} shape" for c in COLOURS]
    if task == "shape":
        return list(SHAPES)
    if task == "count":
        return [f"{w} shape" for w in COUNT_NAMES.values()]
    raise ValueError(f"unknown task {task!r}")


def prompts(task="colour_shape"):
    """The text prompts of a task: TEMPLATE around each label; counts say "a photo of two shapes."."""
    if task == "count":
        return [f"a photo of {w} {'shape' if n == 1 else 'shapes'}." for n, w in COUNT_NAMES.items()]
    return [TEMPLATE.format(label) for label in class_names(task)]


def true_label(s: Sample, task="colour_shape") -> int:
    """The index of a sample's true label in class_names(task)."""
    key = {"colour_shape": f"{s.colour} {s.shape}", "colour": f"{s.colour} shape", "shape": s.shape,
           "count": f"{COUNT_NAMES[s.count]} shape"}[task]
    return class_names(task).index(key)
