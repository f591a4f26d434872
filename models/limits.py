"""The size limits of a decodable image: one source for `models.preprocess` and `serve.settings`.

Torch-free, so that `busnet --help` (which reads serve.settings for its defaults) imports no torch.
Ultrasound frames are under ~2,000 px a side and at most ~3:1 (extended field of view); these caps
leave 2x headroom and bound what one decode and its padded square cost: ~70 MB at the caps (16-bit
gray as float32). Without them a 4 x 20000 PNG of 200 bytes padded to a 20000 x 20000 square (1.6 GB).
A cine loop is at most ~10 s at 60 fps (600 frames): MAX_FRAMES leaves 2x. A DICOM file that claimed
2e9 frames (9 KB of pixel data) made ingest list 2e9 frames and grow past 24 GB.
"""

MAX_SIDE = 4096
MAX_ASPECT = 8
MAX_PIXELS = 8_000_000
MAX_FRAMES = 1200
