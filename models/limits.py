"""The size limits of a decodable image: one source for `models.preprocess` and `serve.settings`.

Torch-free, so that `busnet --help` (which reads serve.settings for its defaults) imports no torch.
Ultrasound frames are under ~2,000 px a side and at most ~3:1 (extended field of view); these caps
leave 2x headroom and bound what one decode and its padded square cost: ~70 MB at the caps (16-bit
gray as float32). Without them a 4 x 20000 PNG of 200 bytes padded to a 20000 x 20000 square (1.6 GB).
"""

MAX_SIDE = 4096
MAX_ASPECT = 8
MAX_PIXELS = 8_000_000
