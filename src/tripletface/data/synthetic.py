"""Procedurally rendered faces: many persons, several pictures each, nothing to download.

A person is a set of stable *traits* (face shape, eyes, brows, nose, mouth, skin, hair, marks)
drawn from ``(seed, person id)``; persons of one *family* (``person id // family_size``) start from
the same traits and each redraws only a few trait groups, so lookalikes (hard negatives) exist.
Every picture adds *nuisance* drawn from ``(seed, person id, image index)``: pose (in-plane
rotation, a yaw-like squeeze), scale, shift, expression, lighting, background, clothes, blur,
noise and occluders (glasses, a hat brim, a hand). The same arguments give the same pixels.
"""

import math
from concurrent.futures import Executor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import Dataset

from tripletface.cache import write_atomic
from tripletface.errors import InputError

Traits = dict[str, float]
Nuisance = dict[str, float]
Colour = tuple[int, int, int]

# name -> (group, low, high), in face units (the canvas spans -1..1, y down, the face centre is at
# y = FACE_Y). A trait with low 0 and an integer high is a choice among that many options.
TRAIT_SPACE: dict[str, tuple[str, float, float]] = {
    "face_width": ("face", 0.40, 0.54),
    "face_height": ("face", 0.52, 0.64),
    "face_squareness": ("face", 1.8, 3.6),
    "chin_taper": ("face", 0.0, 0.45),
    "ear_size": ("face", 0.07, 0.14),
    "eye_spacing": ("eyes", 0.15, 0.25),
    "eye_height": ("eyes", -0.22, -0.06),
    "eye_width": ("eyes", 0.065, 0.11),
    "eye_aspect": ("eyes", 0.38, 0.72),
    "eye_tilt": ("eyes", -0.22, 0.22),
    "iris_size": ("eyes", 0.6, 0.95),
    "eye_colour": ("eye_colour", 0, 6),
    "eye_shade": ("eye_colour", 0.75, 1.25),
    "brow_gap": ("brows", 0.06, 0.14),
    "brow_thickness": ("brows", 0.018, 0.05),
    "brow_tilt": ("brows", -0.3, 0.3),
    "brow_arch": ("brows", -0.01, 0.06),
    "brow_length": ("brows", 0.9, 1.5),
    "brow_darkness": ("brows", 0.45, 0.95),
    "nose_style": ("nose", 0, 4),
    "nose_length": ("nose", 0.10, 0.22),
    "nose_width": ("nose", 0.04, 0.10),
    "mouth_height": ("mouth", 0.36, 0.58),
    "mouth_width": ("mouth", 0.09, 0.19),
    "lip_thickness": ("mouth", 0.015, 0.045),
    "lip_redness": ("mouth", 0.1, 0.9),
    "mouth_curve": ("mouth", -0.02, 0.03),
    "skin_tone": ("skin", 0.0, 1.0),
    "skin_warmth": ("skin", -1.0, 1.0),
    "hair_style": ("hair", 0, 7),
    "hairline": ("hair", 0.45, 0.85),
    "hair_volume": ("hair", 0.04, 0.15),
    "hair_part": ("hair", -1.0, 1.0),
    "hair_length": ("hair", 0.6, 1.3),
    "hair_colour": ("hair_colour", 0, 8),
    "hair_shade": ("hair_colour", 0.75, 1.25),
    "beard_style": ("beard", 0, 6),
    "mole_count": ("marks", 0, 4),
    "mole_x0": ("marks", -0.35, 0.35),
    "mole_y0": ("marks", -0.15, 0.45),
    "mole_x1": ("marks", -0.35, 0.35),
    "mole_y1": ("marks", -0.15, 0.45),
    "mole_x2": ("marks", -0.35, 0.35),
    "mole_y2": ("marks", -0.15, 0.45),
    "mole_size": ("marks", 0.014, 0.032),
    "freckles": ("marks", 0.0, 1.0),
}
TRAIT_GROUPS: tuple[str, ...] = tuple(dict.fromkeys(group for group, _, _ in TRAIT_SPACE.values()))
# Groups a family member may redraw: marks and beards are absent in many persons, so redrawing
# them would often change nothing visible and leave two members indistinguishable.
REDRAWN_GROUPS: tuple[str, ...] = tuple(g for g in TRAIT_GROUPS if g not in ("marks", "beard"))

FACE_Y = 0.1
#: Chunks of items a pool renders in SyntheticFaces.tensors(): a few per worker evens out load.
RENDER_CHUNKS = 16
# Face units -> half-canvas units: the head fills the frame as in an aligned face chip.
FACE_SCALE = 1.2
SKIN: tuple[Colour, ...] = (
    (255, 228, 206),
    (240, 200, 166),
    (224, 174, 132),
    (196, 138, 94),
    (148, 98, 64),
    (96, 63, 42),
)
HAIR: tuple[Colour, ...] = (
    (24, 20, 18),
    (66, 43, 28),
    (116, 76, 42),
    (172, 112, 60),
    (226, 196, 126),
    (150, 150, 152),
    (176, 66, 30),
    (238, 232, 222),
)
EYES: tuple[Colour, ...] = (
    (70, 44, 24),
    (112, 72, 36),
    (122, 112, 52),
    (60, 112, 62),
    (58, 98, 172),
    (112, 132, 148),
)
# Unit circle for ellipses as polygons; freckle spots on one cheek (mirrored for the other).
_CIRCLE = np.stack(
    [
        np.cos(np.linspace(0, 2 * np.pi, 20, endpoint=False)),
        np.sin(np.linspace(0, 2 * np.pi, 20, endpoint=False)),
    ],
    axis=1,
)
_FRECKLES = np.array(
    [[0.14, 0.05], [0.2, 0.08], [0.26, 0.04], [0.17, 0.13], [0.24, 0.12], [0.3, 0.09]]
)


def _traits_from_unit(unit: dict[str, float]) -> Traits:
    """Map unit-interval codes to trait values in the ranges of TRAIT_SPACE."""
    return {
        name: low + (high - low) * min(max(unit[name], 0.0), 1.0 - 1e-9)
        for name, (_, low, high) in TRAIT_SPACE.items()
    }


#: Trait groups each family member redraws, and the jitter of the rest: the lookalikes' closeness.
#: Measured with the demo (1000 persons, 1000 semi-hard steps at 48 x 48): 3 groups and 0.08 left
#: most rank-1 errors inside families and stalled near 94%; 4 and 0.1 reach about 96%.
REDRAWN_GROUPS_DEFAULT = 4
JITTER_DEFAULT = 0.1


def person_traits(
    seed: int,
    person_id: int,
    family_size: int = 4,
    redrawn_groups: int = REDRAWN_GROUPS_DEFAULT,
    jitter: float = JITTER_DEFAULT,
) -> Traits:
    """Traits of one person: the family's, with ``redrawn_groups`` of REDRAWN_GROUPS redrawn.

    ``jitter`` is the standard deviation, in unit-interval codes, of the small offset every
    continuous trait gets; choices (hair style, nose style, ...) move only when their group is
    redrawn. Smaller ``redrawn_groups`` and ``jitter`` make closer lookalikes.
    """
    family = np.random.default_rng([seed, 2, person_id // family_size])
    codes = family.random(len(TRAIT_SPACE))
    unit = {name: float(u) for name, u in zip(TRAIT_SPACE, codes, strict=True)}
    if family_size == 1:
        return _traits_from_unit(unit)
    own = np.random.default_rng([seed, 3, person_id])
    count = min(redrawn_groups, len(REDRAWN_GROUPS))
    redrawn = {REDRAWN_GROUPS[i] for i in own.choice(len(REDRAWN_GROUPS), count, replace=False)}
    offsets = own.normal(0.0, jitter, len(TRAIT_SPACE))
    fresh = own.random(len(TRAIT_SPACE))
    for i, (name, (group, low, high)) in enumerate(TRAIT_SPACE.items()):
        if group in redrawn:
            unit[name] = float(fresh[i])
        elif not _is_choice(low, high):
            unit[name] = unit[name] + float(offsets[i])
    return _traits_from_unit(unit)


def _is_choice(low: float, high: float) -> bool:
    """True for traits that pick among options (low 0, integer high >= 2)."""
    return low == 0 and float(high).is_integer() and high >= 2


def sample_nuisance(rng: np.random.Generator, strength: float = 1.0) -> Nuisance:
    """Per-picture nuisance; ``strength`` 0 gives the canonical picture (identical every time).

    Keys: rotation (radians), yaw (radians), scale, shift_x/shift_y (face units), smile,
    mouth_open, eye_open, brow_raise, light_angle (radians), light_strength, brightness,
    cast_r/g/b (colour gains), background/clothes colours, clutter count and seed, blur (pixels
    of the output), noise (grey levels), glasses/hat/hand flags and their parameters.
    """
    # The amplitudes at strength 1 are tuned on this machine: raw-pixel nearest neighbour finds
    # about 14% of 200 unseen persons one-shot, a 0.9M-parameter CNN with semi-hard triplets ~93%
    # after 350 steps of 32 x 4. Stronger nuisance mostly slows learning, it adds little hardness.
    s = strength
    u = rng.random(34)
    v = rng.normal(0.0, 1.0, 3)
    grey = np.array([128.0, 128.0, 128.0])
    background = grey + min(0.42 * s, 1.0) * (u[0:3] * 255.0 - grey)
    dark = np.array([90.0, 90.0, 100.0])
    clothes = dark + min(0.6 * s, 1.0) * (u[3:6] * 255.0 - dark)
    values = {
        "rotation": s * 0.1 * (2 * u[6] - 1),
        "yaw": s * 0.24 * (2 * u[7] - 1),
        "scale": 1.0 + s * 0.06 * (2 * u[8] - 1),
        "shift_x": s * 0.048 * (2 * u[9] - 1),
        "shift_y": s * 0.036 * (2 * u[10] - 1),
        "smile": s * 0.6 * (2 * u[11] - 1),
        "mouth_open": s * 0.6 * max(0.0, 2 * u[12] - 1),
        "eye_open": 1.0 - s * 0.42 * u[13] ** 2,
        "brow_raise": s * 0.024 * (2 * u[14] - 1),
        "light_angle": 2 * math.pi * u[15],
        "light_strength": s * 0.24 * u[16],
        "brightness": 1.0 + s * 0.15 * (2 * u[17] - 1),
        "cast_r": 1.0 + s * 0.036 * v[0],
        "cast_g": 1.0 + s * 0.036 * v[1],
        "cast_b": 1.0 + s * 0.036 * v[2],
        "background_r": background[0],
        "background_g": background[1],
        "background_b": background[2],
        "clothes_r": clothes[0],
        "clothes_g": clothes[1],
        "clothes_b": clothes[2],
        "clutter": float(rng.integers(0, 3)) if s > 0 else 0.0,
        "clutter_seed": float(rng.integers(0, 2**31)),
        "blur": s * 0.54 * u[18] ** 2,
        "noise": s * 4.8 * u[19],
        "glasses": float(u[20] < 0.12 * s),
        "sunglasses": float(u[21] < 0.35),
        "glasses_shape": u[22],
        "glasses_grey": 20 + 200 * u[23],
        "hat": float(u[24] < 0.07 * s),
        "hat_height": u[25],
        "hat_r": 255 * u[26],
        "hat_g": 255 * u[27],
        "hat_b": 255 * u[28],
        "hand": float(u[29] < 0.06 * s),
        "hand_x": 2 * u[30] - 1,
        "hand_y": u[31],
        "hand_angle": 0.6 * (2 * u[32] - 1),
        "hand_shade": 0.85 + 0.25 * u[33],
    }
    return {key: float(value) for key, value in values.items()}


class _Painter:
    """Draws in face units: applies the yaw squeeze by depth, then rotation, scale and shift."""

    def __init__(self, canvas: Image.Image, nuisance: Nuisance):
        self.draw = ImageDraw.Draw(canvas)
        self.half = canvas.width / 2.0
        scale = nuisance["scale"] * self.half * FACE_SCALE
        cos, sin = math.cos(nuisance["rotation"]), math.sin(nuisance["rotation"])
        rotation = np.array([[cos, -sin], [sin, cos]]) * scale
        yaw_cos, self.yaw_sin = math.cos(nuisance["yaw"]), math.sin(nuisance["yaw"])
        # Row vectors: pixels = xy @ linear + shift, the yaw squeeze (x * cos(yaw)) folded in.
        self.linear = np.diag([yaw_cos, 1.0]) @ rotation.T
        self.rotation_x = rotation.T[0]
        self.offset = np.array(
            [self.half * (1 + nuisance["shift_x"]), self.half * (1 + nuisance["shift_y"] + FACE_Y)]
        )
        self.scale = scale

    def _shift(self, depth: float) -> np.ndarray:
        """Pixel offset of face-unit point (0, 0) at ``depth`` (turned sideways by the yaw)."""
        return self.offset + depth * self.yaw_sin * self.rotation_x

    def points(self, xy: np.ndarray, depth: float) -> list[float]:
        """Face-unit points (N x 2, y relative to the face centre) -> flat pixel coordinates."""
        return (xy @ self.linear + self._shift(depth)).ravel().tolist()

    def polygon(self, xy: np.ndarray, colour: Colour, depth: float = 0.0) -> None:
        """A filled polygon."""
        self.draw.polygon(self.points(xy, depth), fill=colour)

    def ellipse(
        self,
        cx: float,
        cy: float,
        rx: float,
        ry: float,
        colour: Colour,
        depth: float = 0.0,
        angle: float = 0.0,
    ) -> None:
        """A filled ellipse with radii rx, ry turned by ``angle`` radians."""
        cos, sin = math.cos(angle), math.sin(angle)
        # The unit circle stretched, turned and mapped to pixels by one 2 x 2 product.
        local = np.array([[rx * cos, rx * sin], [-ry * sin, ry * cos]]) @ self.linear
        centre = np.array([cx, cy]) @ self.linear + self._shift(depth)
        self.draw.polygon((_CIRCLE @ local + centre).ravel().tolist(), fill=colour)

    def line(self, xy: np.ndarray, colour: Colour, width: float, depth: float = 0.0) -> None:
        """A polyline ``width`` face units thick."""
        pixels = max(1, round(width * self.scale))
        self.draw.line(self.points(xy, depth), fill=colour, width=pixels, joint="curve")


def _mix(a: Colour, b: Colour, t: float) -> Colour:
    """Linear blend of two colours, t = 0 gives a."""
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def _shade(colour: Colour, factor: float) -> Colour:
    """A colour scaled by ``factor``, clipped to 0-255."""
    return tuple(min(255, max(0, int(c * factor))) for c in colour)  # type: ignore[return-value]


def _palette(colours: tuple[Colour, ...], position: float) -> Colour:
    """The colour at ``position`` in 0..1 along a palette, interpolated between entries."""
    x = min(max(position, 0.0), 1.0) * (len(colours) - 1)
    i = min(int(x), len(colours) - 2)
    return _mix(colours[i], colours[i + 1], x - i)


def skin_colour(traits: Traits) -> Colour:
    """The person's skin colour: a tone along SKIN, warmed or cooled."""
    r, g, b = _palette(SKIN, traits["skin_tone"])
    warmth = traits["skin_warmth"] * 10
    return _shade((int(r + warmth), int(g), int(b - warmth)), 1.0)


def hair_colour(traits: Traits) -> Colour:
    """The person's hair colour: an entry of HAIR, lightened or darkened."""
    return _shade(HAIR[int(traits["hair_colour"])], traits["hair_shade"])


def face_outline(traits: Traits, grow: float = 0.0, count: int = 36) -> np.ndarray:
    """Points (count x 2) of the face outline: a superellipse whose lower half tapers to a chin."""
    t = np.linspace(0, 2 * np.pi, count, endpoint=False)
    power = 2.0 / traits["face_squareness"]
    c, s = np.cos(t), np.sin(t)
    x = (traits["face_width"] + grow) * np.sign(c) * np.abs(c) ** power
    y = (traits["face_height"] + grow) * np.sign(s) * np.abs(s) ** power
    below = np.clip(y / traits["face_height"], 0, None)
    return np.column_stack([x * (1 - traits["chin_taper"] * below**2), y])


def _draw_background(canvas: Image.Image, nuisance: Nuisance) -> None:
    """Uniform background colour with a few random shapes of clutter."""
    draw = ImageDraw.Draw(canvas)
    colour = (
        int(nuisance["background_r"]),
        int(nuisance["background_g"]),
        int(nuisance["background_b"]),
    )
    draw.rectangle([0, 0, canvas.width, canvas.height], fill=colour)
    rng = np.random.default_rng(int(nuisance["clutter_seed"]))
    for _ in range(int(nuisance["clutter"])):
        x0, y0 = rng.random(2) * canvas.width
        w, h = (0.15 + 0.5 * rng.random(2)) * canvas.width
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = [x0 - w / 2, y0 - h / 2, x0 + w / 2, y0 + h / 2]
        if rng.random() < 0.5:
            draw.ellipse(box, fill=fill)
        else:
            draw.rectangle(box, fill=fill)


def _draw_hair_back(p: _Painter, traits: Traits, colour: Colour) -> None:
    """Hair behind the head: long hair (style 2) or a curly volume (style 5)."""
    style = int(traits["hair_style"])
    width = traits["face_width"] + traits["hair_volume"] + 0.05
    top = -traits["face_height"] - traits["hair_volume"]
    if style == 2:
        bottom = traits["face_height"] * traits["hair_length"]
        xy = np.array(
            [
                [-width, top + 0.15],
                [-width * 0.8, top],
                [width * 0.8, top],
                [width, top + 0.15],
                [width * 1.05, bottom],
                [-width * 1.05, bottom],
            ]
        )
        p.polygon(xy, colour, depth=-0.2)
    elif style == 5:
        radius = traits["face_width"] + 2.2 * traits["hair_volume"]
        p.ellipse(0.0, -0.18, radius, radius * 1.05, colour, depth=-0.2)


def _draw_body(p: _Painter, traits: Traits, skin: Colour, nuisance: Nuisance) -> None:
    """Shoulders in the picture's clothes and the neck."""
    clothes = (int(nuisance["clothes_r"]), int(nuisance["clothes_g"]), int(nuisance["clothes_b"]))
    top = traits["face_height"] * 0.95
    p.polygon(
        np.array(
            [
                [-1.2, 2.0],
                [-1.0, top + 0.25],
                [-0.3, top + 0.1],
                [0.3, top + 0.1],
                [1.0, top + 0.25],
                [1.2, 2.0],
            ]
        ),
        clothes,
    )
    neck = traits["face_width"] * 0.5
    p.polygon(
        np.array([[-neck, 0.2], [neck, 0.2], [neck * 1.1, top + 0.16], [-neck * 1.1, top + 0.16]]),
        _shade(skin, 0.82),
    )


def _draw_head(p: _Painter, traits: Traits, skin: Colour) -> None:
    """Ears, then the face outline."""
    ear = traits["ear_size"]
    for side in (-1, 1):
        x = side * traits["face_width"] * 0.97
        p.ellipse(x, traits["eye_height"] + 0.08, ear * 0.6, ear, _shade(skin, 0.9), depth=-0.25)
    p.polygon(face_outline(traits), skin)


def _draw_marks(p: _Painter, traits: Traits, skin: Colour) -> None:
    """Moles and freckles."""
    size = traits["mole_size"]
    for i in range(int(traits["mole_count"])):
        x, y = traits[f"mole_x{i}"], traits[f"mole_y{i}"]
        p.ellipse(x, y, size, size, _shade(skin, 0.45), depth=0.1)
    spots = int(traits["freckles"] * 14) - 6
    for x, y in _FRECKLES[: max(spots, 0)]:
        for side in (-1, 1):
            p.ellipse(side * x, y, 0.012, 0.012, _shade(skin, 0.72), depth=0.1)


def _draw_eyes(p: _Painter, traits: Traits, nuisance: Nuisance) -> None:
    """Whites, irises and pupils; the lids close as eye_open falls."""
    width = traits["eye_width"]
    height = width * traits["eye_aspect"] * nuisance["eye_open"]
    iris = _shade(EYES[int(traits["eye_colour"])], traits["eye_shade"])
    for side in (-1, 1):
        x, y = side * traits["eye_spacing"], traits["eye_height"]
        angle = -side * traits["eye_tilt"]
        p.ellipse(x, y, width, height, (242, 240, 235), depth=0.12, angle=angle)
        radius = min(width * traits["eye_aspect"] * traits["iris_size"], height * 1.05)
        p.ellipse(x, y, radius, radius, iris, depth=0.12)
        p.ellipse(x, y, radius * 0.45, radius * 0.45, (15, 12, 12), depth=0.12)


def _draw_brows(p: _Painter, traits: Traits, hair: Colour, nuisance: Nuisance) -> None:
    """Two arched brows; brow_raise lifts them."""
    length = traits["eye_width"] * traits["brow_length"]
    colour = _shade(hair, traits["brow_darkness"])
    y = traits["eye_height"] - traits["brow_gap"] - nuisance["brow_raise"]
    t = np.linspace(-1, 1, 5)
    for side in (-1, 1):
        xs = side * traits["eye_spacing"] + t * length
        ys = y - traits["brow_arch"] * (1 - t**2) + side * traits["brow_tilt"] * t * length * 0.5
        p.line(np.column_stack([xs, ys]), colour, traits["brow_thickness"], depth=0.12)


def _draw_nose(p: _Painter, traits: Traits, skin: Colour) -> None:
    """One of four nose styles, drawn as shading below the eyes."""
    style = int(traits["nose_style"])
    top, bottom = traits["eye_height"] + 0.05, traits["eye_height"] + 0.05 + traits["nose_length"]
    width = traits["nose_width"]
    dark, shadow = _shade(skin, 0.62), _shade(skin, 0.82)
    if style == 0:
        p.polygon(np.array([[0.0, top], [width, bottom], [-width * 0.6, bottom]]), shadow, 0.3)
    elif style == 1:
        p.line(np.array([[0.02, top], [0.03, bottom - 0.02], [-0.01, bottom]]), dark, 0.018, 0.3)
    elif style == 2:
        p.ellipse(0.0, bottom - width * 0.5, width * 0.8, width * 0.6, shadow, depth=0.3)
    else:
        p.line(
            np.array(
                [
                    [-width, bottom - 0.02],
                    [-width * 0.5, bottom],
                    [width * 0.5, bottom],
                    [width, bottom - 0.02],
                ]
            ),
            dark,
            0.02,
            0.3,
        )
    for side in (-1, 1):
        p.ellipse(side * width * 0.45, bottom, 0.016, 0.011, dark, depth=0.3)


def _draw_mouth(p: _Painter, traits: Traits, skin: Colour, nuisance: Nuisance) -> None:
    """Lips curved by the resting curve plus the picture's smile; opens with mouth_open."""
    y = traits["face_height"] * traits["mouth_height"]
    half = traits["mouth_width"] * (1 + 0.15 * nuisance["smile"])
    curve = traits["mouth_curve"] + 0.03 * nuisance["smile"]
    lips = _mix(skin, (190, 40, 60), traits["lip_redness"])
    t = np.linspace(-1, 1, 7)
    xs, ys = t * half, y - curve * (t**2 - 1)
    opening = nuisance["mouth_open"] * traits["lip_thickness"] * 1.6
    if opening > 0.004:
        inner = np.concatenate(
            [
                np.column_stack([xs, ys - opening * (1 - t**2)]),
                np.column_stack([xs[::-1], ys[::-1] + opening * (1 - t[::-1] ** 2)]),
            ]
        )
        p.polygon(inner, (60, 20, 25), depth=0.15)
    p.line(np.column_stack([xs, ys - opening * (1 - t**2)]), lips, traits["lip_thickness"], 0.15)
    p.line(
        np.column_stack([xs * 0.9, ys + opening * (1 - t**2) + traits["lip_thickness"] * 0.5]),
        lips,
        traits["lip_thickness"] * 1.2,
        0.15,
    )


def _draw_beard(p: _Painter, traits: Traits, hair: Colour) -> None:
    """Facial hair: none (styles 0-2), moustache, goatee or a full beard."""
    style = int(traits["beard_style"])
    y = traits["face_height"] * traits["mouth_height"]
    half = traits["mouth_width"]
    if style == 3:
        p.line(np.array([[-half, y - 0.02], [0.0, y - 0.05], [half, y - 0.02]]), hair, 0.03, 0.15)
    elif style == 4:
        p.ellipse(0.0, y + 0.1, half * 0.6, 0.06, hair, depth=0.15)
    elif style == 5:
        outline = face_outline(traits)
        chin = outline[outline[:, 1] > y - 0.08]
        chin = chin[np.argsort(np.arctan2(chin[:, 1], chin[:, 0]))]
        band = np.concatenate([chin, [[-half, y + 0.04], [half, y + 0.04]]])
        p.polygon(band, hair, depth=0.05)


def _hair_cap(traits: Traits) -> np.ndarray:
    """Polygon of the hair on top of the head, from the hairline up to the hair's outer edge."""
    style = int(traits["hair_style"])
    grow = traits["hair_volume"] * (0.3 if style == 0 else 1.0)
    outer = face_outline(traits, grow=grow, count=48)
    outer = outer[outer[:, 1] < -0.02]
    outer = outer[np.argsort(-np.arctan2(-outer[:, 1], outer[:, 0]))]
    width = traits["face_width"]
    x = np.linspace(width, -width, 9)
    hairline = -traits["face_height"] * traits["hairline"]
    if style == 3:
        line = np.full_like(x, -traits["face_height"] * 0.32)
    elif style == 4:
        line = hairline + 0.1 * (x / width) ** 2 + 0.12 * traits["hair_part"] * x / width
    else:
        line = hairline + 0.12 * (x / width) ** 2
    sides = np.array([[width * 1.02, -0.02]]), np.array([[-width * 1.02, -0.02]])
    return np.concatenate([outer, sides[0], np.column_stack([x, line]), sides[1]])


def _draw_hair_front(p: _Painter, traits: Traits, hair: Colour, skin: Colour) -> None:
    """The hair cap and its style's extras (spikes, bun); style 0 is a shaved head."""
    style = int(traits["hair_style"])
    colour = _mix(skin, hair, 0.35) if style == 0 else hair
    p.polygon(_hair_cap(traits), colour, depth=0.02)
    top = -traits["face_height"] - traits["hair_volume"]
    if style == 6:
        for x in np.linspace(-0.2, 0.2, 5):
            p.polygon(
                np.array([[x - 0.06, top + 0.05], [x + 0.06, top + 0.05], [x * 1.3, top - 0.12]]),
                hair,
                depth=0.02,
            )
    elif style == 1:
        p.ellipse(0.0, top - 0.04, 0.12, 0.08, hair, depth=0.0)


def _draw_occluders(p: _Painter, traits: Traits, skin: Colour, nuisance: Nuisance) -> None:
    """Glasses, a hat brim and a hand, each present only in some pictures."""
    if nuisance["glasses"]:
        frame = _shade((60, 60, 60), nuisance["glasses_grey"] / 60)
        size = traits["eye_width"] * (1.5 + 0.4 * nuisance["glasses_shape"])
        y = traits["eye_height"]
        for side in (-1, 1):
            x = side * traits["eye_spacing"]
            if nuisance["sunglasses"]:
                p.ellipse(x, y, size, size * 0.75, (25, 25, 30), depth=0.25)
            ring = np.column_stack([x + _CIRCLE[:, 0] * size, y + _CIRCLE[:, 1] * size * 0.75])
            p.line(np.concatenate([ring, ring[:1]]), frame, 0.02, depth=0.25)
        inner = traits["eye_spacing"] - size
        p.line(np.array([[-inner, y], [inner, y]]), frame, 0.02, depth=0.25)
    if nuisance["hat"]:
        colour = (int(nuisance["hat_r"]), int(nuisance["hat_g"]), int(nuisance["hat_b"]))
        brim = -traits["face_height"] * (0.35 + 0.5 * nuisance["hat_height"])
        width = traits["face_width"] + traits["hair_volume"] + 0.12
        p.polygon(
            np.array(
                [
                    [-width * 0.8, -1.5],
                    [width * 0.8, -1.5],
                    [width * 0.85, brim - 0.05],
                    [-width * 0.85, brim - 0.05],
                ]
            ),
            colour,
            0.1,
        )
        p.polygon(
            np.array(
                [
                    [-width, brim - 0.06],
                    [width, brim - 0.06],
                    [width * 1.05, brim + 0.04],
                    [-width * 1.05, brim + 0.04],
                ]
            ),
            _shade(colour, 0.8),
            0.2,
        )
    if nuisance["hand"]:
        hand = _shade(skin, nuisance["hand_shade"])
        cx = 0.45 * nuisance["hand_x"]
        cy = traits["face_height"] * (0.55 + 0.4 * nuisance["hand_y"])
        angle = nuisance["hand_angle"]
        p.ellipse(cx, cy + 0.12, 0.16, 0.2, hand, depth=0.35, angle=angle)
        for i in range(4):
            dx = (i - 1.5) * 0.065
            tip = (cx + dx + 0.25 * math.sin(angle), cy - 0.2 + 0.03 * abs(i - 1.5))
            p.line(np.array([[cx + dx, cy + 0.05], tip]), hand, 0.055, depth=0.35)


def render_face(traits: Traits, nuisance: Nuisance, size: int = 64) -> np.ndarray:
    """One RGB picture (size x size x 3, uint8) of the person with ``traits`` under ``nuisance``.

    Drawn at twice the size and box-filtered down (anti-aliasing), then blurred, lit and noised.
    """
    canvas = Image.new("RGB", (2 * size, 2 * size))
    _draw_background(canvas, nuisance)
    p = _Painter(canvas, nuisance)
    skin, hair = skin_colour(traits), hair_colour(traits)
    _draw_hair_back(p, traits, hair)
    _draw_body(p, traits, skin, nuisance)
    _draw_head(p, traits, skin)
    _draw_marks(p, traits, skin)
    _draw_eyes(p, traits, nuisance)
    _draw_brows(p, traits, hair, nuisance)
    _draw_nose(p, traits, skin)
    _draw_mouth(p, traits, skin, nuisance)
    _draw_beard(p, traits, hair)
    _draw_hair_front(p, traits, hair, skin)
    _draw_occluders(p, traits, skin, nuisance)
    image = canvas.reduce(2)
    if nuisance["blur"] > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(nuisance["blur"]))
    return _light_and_noise(np.asarray(image), nuisance)


def _light_and_noise(pixels: np.ndarray, nuisance: Nuisance) -> np.ndarray:
    """Directional light (a linear ramp), brightness, colour cast and Gaussian noise; uint8 out."""
    if (
        nuisance["light_strength"] == 0
        and nuisance["noise"] == 0
        and nuisance["brightness"] == 1
        and nuisance["cast_r"] == nuisance["cast_g"] == nuisance["cast_b"] == 1
    ):
        return pixels.copy()
    size = pixels.shape[0]
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    angle = nuisance["light_angle"]
    light = 1.0 + nuisance["light_strength"] * (
        math.cos(angle) * ramp[None, :] + math.sin(angle) * ramp[:, None]
    )
    gains = np.array([nuisance["cast_r"], nuisance["cast_g"], nuisance["cast_b"]], np.float32)
    out = pixels.astype(np.float32) * (light * nuisance["brightness"])[:, :, None] * gains
    if nuisance["noise"] > 0:
        rng = np.random.default_rng(int(nuisance["clutter_seed"]) + 1)
        out += rng.standard_normal(out.shape, dtype=np.float32) * nuisance["noise"]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _check_int(name: str, value: int, minimum: int) -> None:
    """InputError unless ``value`` is an int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"SyntheticFaces: {name} must be an integer >= {minimum}, got {value!r}")


class SyntheticFaces(Dataset):
    """Persons ``first_person .. first_person + num_persons - 1``, ``images_per_person`` each.

    Items are ``(uint8 tensor 3 x size x size RGB, label)`` where the label is the person's index
    in this set (0 .. num_persons - 1) and ``person_ids[label]`` its global id. Item ``i`` shows
    person ``i // images_per_person``. ``labels`` lists every item's label without rendering.
    ``nuisance`` scales all per-picture variation (0: every picture of a person is identical);
    ``redrawn_groups`` and ``jitter`` set how far family members stray from each other.
    """

    def __init__(
        self,
        num_persons: int = 1000,
        images_per_person: int = 10,
        size: int = 64,
        seed: int = 0,
        first_person: int = 0,
        family_size: int = 4,
        nuisance: float = 1.0,
        redrawn_groups: int = REDRAWN_GROUPS_DEFAULT,
        jitter: float = JITTER_DEFAULT,
    ):
        _check_int("num_persons", num_persons, 1)
        _check_int("images_per_person", images_per_person, 1)
        _check_int("size", size, 8)
        _check_int("seed", seed, 0)
        _check_int("first_person", first_person, 0)
        _check_int("family_size", family_size, 1)
        _check_int("redrawn_groups", redrawn_groups, 0)
        if not (0 <= nuisance <= 2 and 0 <= jitter <= 1):
            raise InputError(
                f"SyntheticFaces: nuisance must be in 0..2 and jitter in 0..1, "
                f"got {nuisance!r} and {jitter!r}"
            )
        self.num_persons, self.images_per_person = num_persons, images_per_person
        self.size, self.seed, self.nuisance = size, seed, float(nuisance)
        self.person_ids: list[int] = list(range(first_person, first_person + num_persons))
        self.labels: list[int] = [p for p in range(num_persons) for _ in range(images_per_person)]
        self.traits: list[Traits] = [
            person_traits(seed, pid, family_size, redrawn_groups, jitter) for pid in self.person_ids
        ]
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.num_persons * self.images_per_person

    def render(self, index: int) -> np.ndarray:
        """Pixels (size x size x 3, uint8) of item ``index``, rendered now."""
        label, image = divmod(index, self.images_per_person)
        rng = np.random.default_rng([self.seed, 1, self.person_ids[label], image])
        return render_face(self.traits[label], sample_nuisance(rng, self.nuisance), self.size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"item {index} out of range for {len(self)} images")
        index %= len(self)
        if self._cache is not None:
            return self._cache[0][index], self.labels[index]
        image = torch.from_numpy(self.render(index)).permute(2, 0, 1).contiguous()
        return image, self.labels[index]

    def render_range(self, start: int, stop: int) -> np.ndarray:
        """Pixels ((stop - start) x size x size x 3, uint8) of items start .. stop - 1."""
        pixels = np.empty((stop - start, self.size, self.size, 3), np.uint8)
        for i in range(start, stop):
            pixels[i - start] = self.render(i)
        return pixels

    def tensors(self, pool: Executor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """All items at once: (uint8 N x 3 x size x size, int64 N labels), rendered once, cached.

        ``pool`` (e.g. a ProcessPoolExecutor) renders chunks of items in parallel.
        """
        if self._cache is None:
            if pool is None:
                pixels = self.render_range(0, len(self))
            else:
                bounds = np.linspace(0, len(self), RENDER_CHUNKS + 1).astype(int).tolist()
                chunks = pool.map(self.render_range, bounds[:-1], bounds[1:])
                pixels = np.concatenate(list(chunks))
            images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
            self._cache = (images, torch.tensor(self.labels, dtype=torch.long))
        return self._cache


def write_person_folders(
    dataset: SyntheticFaces, out_dir: str | Path, overwrite: bool = False
) -> list[Path]:
    """Write one folder per person (``person_<global id>``) of PNG files; returns the paths.

    Refuses a non-empty ``out_dir`` unless ``overwrite``; every file is written atomically.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another output path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(
            f"{out}: folder is not empty; choose an empty or new folder, "
            "or write into it anyway (overwrite=True, tripletface synth --force)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(
            f"{out}: cannot create the folder ({error.strerror}); choose another output path"
        ) from None
    width = max(3, len(str(dataset.images_per_person - 1)))
    paths = []
    for index in range(len(dataset)):
        label, image = divmod(index, dataset.images_per_person)
        folder = out / f"person_{dataset.person_ids[label]:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{image:0{width}d}.png"
        pixels = dataset[index][0].permute(1, 2, 0).numpy()
        _save_png_atomically(pixels, path)
        paths.append(path)
    return paths


def _save_png_atomically(pixels: np.ndarray, path: Path) -> None:
    """Write H x W x 3 uint8 pixels as a PNG through a temporary file and os.replace."""
    image = Image.fromarray(pixels)
    write_atomic(
        path, lambda stream: image.save(stream, format="PNG", compress_level=1), sync=False
    )
