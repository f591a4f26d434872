"""What a replica can be told through Serve's `user_config` without restarting, and its limits.

Changing any of these in the Serve config (serve/config.yaml, the RayService's serveConfigV2) calls
`reconfigure` on the live replicas: a new `checkpoint` swaps the model in place while the old one
keeps answering; batch size and wait apply to the next batch. A user_config is checked strictly
(types, bools are not numbers, upper bounds) and applied whole or not at all: `max_image_bytes:
"20000000"` (a string) used to pass and make every request a 500.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from models.limits import MAX_PIXELS

# The batching defaults of every way busnet starts Serve (busnet serve, the demo, serve/config.yaml and so
# the RayService, busnet bench serve); tests/test_serve_units.py holds config.yaml to them.
DEFAULT_MAX_BATCH_SIZE = 16
DEFAULT_BATCH_WAIT_S = 0.005
DEFAULT_MAX_IMAGE_BYTES = 20_000_000
# A BMP at the pixel cap (8 MP RGB) is 24 MB; a larger body cannot hold a decodable image.
MAX_IMAGE_BYTES = 32_000_000
# Serve's HTTP proxy answers 408 after this: no request waits forever on a stuck replica. The same
# value is in serve/config.yaml (tests/test_serve_units.py checks it).
REQUEST_TIMEOUT_S = 60
# auto: bf16 (fp16 where bf16 is missing) on a GPU, fp32 on CPU; serve.predictor maps the others to dtypes.
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def _limit(default: float, low: float, high: float) -> Any:
    """A numeric setting and its allowed range [low, high]."""
    return field(default=default, metadata={"range": (low, high)})


@dataclass(frozen=True)
class ServeSettings:
    """A replica's live settings; `from_user_config` validates them by name, type and range."""

    checkpoint: str | None = None
    max_batch_size: int = _limit(DEFAULT_MAX_BATCH_SIZE, 1, 256)
    batch_wait_timeout_s: float = _limit(DEFAULT_BATCH_WAIT_S, 0, 10)
    precision: str = PRECISIONS[0]  # one of PRECISIONS (fp16, bf16 on GPU only)
    max_image_bytes: int = _limit(DEFAULT_MAX_IMAGE_BYTES, 1, MAX_IMAGE_BYTES)
    max_image_pixels: int = _limit(MAX_PIXELS, 1, MAX_PIXELS)

    @classmethod
    def from_user_config(cls, user_config: dict | None) -> ServeSettings:
        if user_config is not None and not isinstance(user_config, dict):
            raise ValueError(f"user_config must be a mapping, got {type(user_config).__name__}")
        given = dict(user_config or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(f"unknown user_config keys {unknown}; known: {sorted(known)}")
        settings = cls(**given)
        settings.validate()
        return settings

    def validate(self) -> None:
        if not self.checkpoint:
            raise ValueError(
                "no checkpoint: set user_config.checkpoint (serve/config.yaml) or busnet serve --checkpoint"
            )
        if not isinstance(self.checkpoint, str):
            raise ValueError(f"checkpoint must be a string (a URI), got {type(self.checkpoint).__name__}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for setting in fields(self):
            if "range" in setting.metadata:
                _check_number(
                    setting.name, getattr(self, setting.name), setting.type == "float", *setting.metadata["range"]
                )

    def to_user_config(self) -> dict:
        return asdict(self)


def _check_number(name: str, value: object, real: bool, low: float, high: float) -> None:
    kinds = (int, float) if real else (int,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "a number" if real else "an integer"
        raise ValueError(f"{name} must be {kind}, got {type(value).__name__}")
    if not low <= value <= high:  # also refuses NaN
        raise ValueError(f"{name} must be in [{low:,}, {high:,}], got {value:,}")
