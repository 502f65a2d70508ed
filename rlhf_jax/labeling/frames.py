"""Clips of frame segments (MinAtar): each channel a colour, scaled up, encoded as MuJoCo's.

A MinAtar observation is the game's whole picture: a boolean frame of H x W cells (10 x 10)
with one channel per kind of object (Breakout: paddle, ball, trail, brick). A segment keeps
its observations, so its clip needs no simulator: each step's frame is drawn with

  - a fixed colour per channel (`PALETTE`, distinct hues on a black background, as MinAtar's
    own display draws them; channel c gets PALETTE[c]);
  - where channels overlap in a cell, the highest-numbered channel's colour (as MinAtar's
    display, which draws channel c + 1 over channel c); empty cells are black;
  - each cell a SCALE x SCALE block of pixels (nearest neighbour: 10 x 10 -> 320 x 320,
    about the size of the page's video box, so the browser barely rescales it).

Clips are encoded with `render.encode_mp4` (H.264, the MuJoCo clips' encoder) at the env's
rate (`render.frame_stride`: MinAtar's DT of 0.06 s gives 16.7 frames a second, a
25-step segment 1.5 s); padded steps repeat the last real frame, as MuJoCo clips do.
Drawing is NumPy and takes microseconds, so `FrameClips` renders in the calling thread:
it has `ClipPool`'s interface (`render(jobs)`, `close()`) without its processes.

Host only.
"""

import os

import numpy as np

from rlhf_jax.labeling import render

SCALE = 32
# One colour per channel (RGB); MinAtar's games have at most 10 channels (Seaquest).
PALETTE = np.array(
  [
    (230, 25, 75),  # red
    (60, 180, 75),  # green
    (255, 225, 25),  # yellow
    (0, 130, 200),  # blue
    (245, 130, 48),  # orange
    (145, 30, 180),  # purple
    (70, 240, 240),  # cyan
    (240, 50, 230),  # magenta
    (210, 245, 60),  # lime
    (250, 190, 212),  # pink
  ],
  np.uint8,
)


def colour(frames: np.ndarray) -> np.ndarray:
  """Frames [..., H, W, C] (0/1, any dtype) -> RGB uint8 [..., H, W, 3]: a cell takes the
  colour of its highest-numbered set channel, black if none is set."""
  frames = np.asarray(frames) > 0
  channels = frames.shape[-1]
  if channels > len(PALETTE):
    raise ValueError(f"frames have {channels} channels; the palette colours {len(PALETTE)}")
  # 1 + the highest set channel, 0 where none: an index into [black, PALETTE...].
  top = np.max(frames * np.arange(1, channels + 1), axis=-1)
  table = np.concatenate([np.zeros((1, 3), np.uint8), PALETTE[:channels]])
  return table[top]


def upscale(images: np.ndarray, scale: int = SCALE) -> np.ndarray:
  """Images [..., H, W, 3] -> [..., H * scale, W * scale, 3], each pixel a square block."""
  return np.repeat(np.repeat(images, scale, axis=-3), scale, axis=-2)


def segment_frames(obs, mask, frame_shape, stride: int = 1, scale: int = SCALE) -> np.ndarray:
  """The clip's frames, uint8 [F, H * scale, W * scale, 3], of the steps 0, stride, ...
  of one segment: `obs` [K, H * W * C] flattened frames, `mask` [K] (0: padding, which
  shows the last real step)."""
  obs = np.asarray(obs)
  valid = max(1, int(np.sum(np.asarray(mask) > 0)))
  steps = [min(step, valid - 1) for step in range(0, len(obs), stride)]
  return upscale(colour(obs[steps].reshape(len(steps), *frame_shape)), scale)


class FrameClips:
  """Renders clips of frame segments, as `render.ClipPool` does those of MuJoCo's."""

  def __init__(self, frame_shape, dt: float, scale: int = SCALE):
    self.frame_shape, self.dt, self.scale = tuple(frame_shape), dt, scale

  def render(self, jobs: list[tuple[dict, str]]) -> list[str]:
    """Renders the (segment, path) jobs whose clip is not on disk yet; returns the paths.
    A segment is a dict with obs [K, H * W * C] and mask [K]."""
    stride = render.frame_stride(self.dt)
    for segment, path in jobs:
      if not os.path.exists(path):
        frames = segment_frames(
          segment["obs"], segment["mask"], self.frame_shape, stride, self.scale
        )
        render.encode_mp4(frames, path, fps=1.0 / (self.dt * stride))
    return [path for _, path in jobs]

  def close(self) -> None:
    pass


def clip_pool(meta: dict, processes: int = 2):
  """What renders a run's clips, from the store's meta (`render.clip_meta`): frames for an
  env whose observations are frames (MinAtar: `frame_shape` is set), else MuJoCo."""
  if meta.get("frame_shape"):
    return FrameClips(meta["frame_shape"], meta["dt"])
  model = render.mj_model_of(meta["env_name"], meta["backend"])
  return render.ClipPool(model, meta["dt"], processes)
