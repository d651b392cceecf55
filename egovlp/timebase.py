"""The time constants of the Ego4D feature timeline, defined once (docs/design.md, "Features").

Every NLQ / MQ feature row is a 16-frame window on a 30 fps grid, so rows advance at 30 / 16 =
1.875 per second; the published reader instead used 1.87 rows per second (`--compat`). Each row is
encoded from 4 frames, one per 4-frame quarter of its window. VQ2D works on 5 fps clip frames.
"""

from __future__ import annotations

GRID_FPS = 30.0  # the Ego4D timeline (NLQ, MQ, FHO frame numbers) is defined on 30 fps frames
WINDOW_FRAMES = 16  # 30 fps frames per NLQ / MQ feature row
FRAMES_PER_ROW = 4  # frames the video tower sees per row (one per quarter of the window)
ROWS_PER_SECOND = GRID_FPS / WINDOW_FRAMES  # 1.875
COMPAT_ROWS_PER_SECOND = 1.87  # the published reader's rate (`--compat`)
VQ_FPS = 5.0  # VQ2D clip frame rate
VQ_STEP = int(GRID_FPS / VQ_FPS)  # 30 fps frames per 5 fps VQ2D frame
