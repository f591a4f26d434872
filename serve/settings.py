"""What a replica can be told through Serve's `user_config` without restarting.

Changing any of these in the Serve config (serve/config.yaml, the RayService's serveConfigV2) calls
`reconfigure` on the live replicas: a new `checkpoint` swaps the model in place while the old one
keeps answering; batch size and wait apply to the next batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_BATCH_WAIT_S = 0.01
DEFAULT_MAX_IMAGE_BYTES = 20_000_000
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
# auto: bf16 (fp16 where bf16 is missing) on a GPU, fp32 on CPU; serve.predictor maps the others to dtypes.
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class ServeSettings:
    """A replica's live settings; `from_user_config` validates them by name and type."""

    checkpoint: str | None = None
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_wait_timeout_s: float = DEFAULT_BATCH_WAIT_S
    precision: str = PRECISIONS[0]  # one of PRECISIONS (fp16, bf16 on GPU only)
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    @classmethod
    def from_user_config(cls, user_config: dict | None) -> ServeSettings:
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
        if int(self.max_batch_size) < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if not 0 <= float(self.batch_wait_timeout_s) <= 10:
            raise ValueError(f"batch_wait_timeout_s must be in [0, 10], got {self.batch_wait_timeout_s}")
        if int(self.max_image_bytes) < 1 or int(self.max_image_pixels) < 1:
            raise ValueError("max_image_bytes and max_image_pixels must be positive")

    def to_user_config(self) -> dict:
        return asdict(self)
