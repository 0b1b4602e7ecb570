"""The one declared split of the embedded sample photos into training and held-out images.

Every model in the zoo trains on `TRAIN` only; every number a chapter concludes from is measured on
`HELD_OUT`, which no model ever trains on (nor selects a checkpoint on). The split is fixed here, once,
so that tables can name it (`SPLIT_NAME`) and a reader can check it.

Why these four are held out: they are ordinary photographs of four different kinds (animal fur, an
indoor still life, a macro close-up of a flower, a portrait), the kinds of content a practitioner
upscales, while the two views of the Middlebury motorcycle (nearly the same scene) stay together on the
training side so that no held-out image has a near-duplicate in training.
"""

from __future__ import annotations

SPLIT_NAME = "samples-v1"

HELD_OUT: tuple[str, ...] = ("chelsea", "coffee", "flower", "grace_hopper")

TRAIN: tuple[str, ...] = (
    "astronaut",
    "rocket",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
    "motorcycle_left",
    "motorcycle_right",
    "china",
)


def split_names(part: str) -> tuple[str, ...]:
    """The photo names of `part`: "train" or "held_out"."""
    if part == "train":
        return TRAIN
    if part == "held_out":
        return HELD_OUT
    from savl.errors import ConfigError

    raise ConfigError(f"unknown split part {part!r} (use train or held_out)")


def describe() -> dict:
    """The split as a JSON-ready record (model cards and results files carry it)."""
    return {"name": SPLIT_NAME, "train": list(TRAIN), "held_out": list(HELD_OUT)}
