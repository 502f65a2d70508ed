"""Clips of MinAtar frames (rlhf_jax/labeling/frames.py): colours by hand, the labeling app
serving a MinAtar pair's clips."""

import os

import numpy as np
import pytest

from rlhf_jax.labeling import app as labeling_app
from rlhf_jax.labeling import frames, render
from rlhf_jax.labeling.store import Store

BREAKOUT = (10, 10, 4)  # paddle, ball, trail, brick


def test_each_channel_gets_its_colour_empty_is_black_and_the_highest_channel_wins():
  frame = np.zeros((2, 3, 4), bool)
  frame[0, 0, 0] = True  # channel 0 alone
  frame[0, 1, 2] = True  # channel 2 alone
  frame[1, 2, 1] = frame[1, 2, 3] = True  # channels 1 and 3 overlap: 3 wins
  frame[1, 0, 0] = frame[1, 0, 1] = True  # 0 and 1: 1 wins
  rgb = frames.colour(frame.astype(np.float32))
  expected = np.zeros((2, 3, 3), np.uint8)
  expected[0, 0] = frames.PALETTE[0]
  expected[0, 1] = frames.PALETTE[2]
  expected[1, 2] = frames.PALETTE[3]
  expected[1, 0] = frames.PALETTE[1]
  assert rgb.dtype == np.uint8
  np.testing.assert_array_equal(rgb, expected)
  assert len({tuple(c) for c in frames.PALETTE}) == len(frames.PALETTE)  # distinct colours
  assert np.all(frames.PALETTE.sum(1) > 150)  # none is (nearly) black
  with pytest.raises(ValueError, match="11 channels"):
    frames.colour(np.zeros((1, 1, 11)))


def test_segment_frames_are_scaled_by_nearest_neighbour_and_padding_repeats_the_last():
  obs = np.zeros((4, 2, 2, 3), np.float32)
  for step in range(4):
    obs[step, step % 2, 0, step % 3] = 1.0
  clip = frames.segment_frames(obs.reshape(4, -1), np.array([1, 1, 1, 0]), (2, 2, 3), scale=3)
  assert clip.shape == (4, 6, 6, 3)
  block = clip[1, 3:6, 0:3]  # step 1: cell (1, 0) in channel 1, 3x3 pixels
  np.testing.assert_array_equal(block, np.broadcast_to(frames.PALETTE[1], (3, 3, 3)))
  assert clip[1, :3].max() == 0 and clip[1, 3:, 3:].max() == 0  # the rest is black
  np.testing.assert_array_equal(clip[3], clip[2])  # padding shows the last real step
  strided = frames.segment_frames(obs.reshape(4, -1), np.ones(4), (2, 2, 3), stride=2, scale=1)
  np.testing.assert_array_equal(strided, frames.colour(obs[[0, 2]]))


def breakout_segment(rng, length=25) -> dict:
  obs = (rng.random((length, *BREAKOUT)) < 0.15).astype(np.float32).reshape(length, -1)
  return {
    "obs": obs,
    "action": np.eye(3, dtype=np.float32)[rng.integers(0, 3, length)],
    "next_obs": obs,
    "true_reward": np.zeros((length,), np.float32),
    "mask": np.ones((length,), np.float32),
    "qpos": np.zeros((length, 1), np.float32),
  }


@pytest.fixture(scope="module")
def minatar_workdir(tmp_path_factory):
  """A store of 3 MinAtar Breakout pairs whose clips the app's renderer has drawn."""
  workdir = str(tmp_path_factory.mktemp("minatar_labeling"))
  store = Store(labeling_app.store_path(workdir))
  meta = {"env_name": "minatar-breakout", "backend": "pgx", "dt": 0.06, "frame_shape": BREAKOUT}
  store.set_meta(dict(meta, segment_length=25))
  rng = np.random.default_rng(0)
  pairs = [(f"m{i}a", breakout_segment(rng), f"m{i}b", breakout_segment(rng)) for i in range(3)]
  store.add_pairs(pairs, env_steps=0)
  renderer = labeling_app.ClipRenderer(workdir)
  try:
    assert renderer.render_waiting() == 3
    assert isinstance(renderer.pool, frames.FrameClips)  # not MuJoCo's renderer
  finally:
    renderer.close()
  return workdir


def test_the_app_serves_a_minatar_pairs_clips(minatar_workdir):
  import imageio_ffmpeg

  client = labeling_app.create_app(minatar_workdir).test_client()
  pair = client.get("/api/next?client=ann").get_json()["pair"]
  assert pair["pair_id"] == 1 and pair["left"].endswith("m0a.mp4")
  answer = client.get(pair["left"])
  assert answer.status_code == 200 and answer.mimetype == "video/mp4"
  assert answer.data[4:8] == b"ftyp"  # an MP4 file
  path = render.clip_path(os.path.join(minatar_workdir, "clips"), "m0a")
  count, seconds = imageio_ffmpeg.count_frames_and_secs(path)
  assert count == 25 and seconds == pytest.approx(25 * 0.06, abs=0.07)  # 16.7 fps, 1.5 s
  reader = imageio_ffmpeg.read_frames(path)
  info = next(reader)
  assert info["codec"].startswith("h264") and info["size"] == (320, 320)
  decoded = np.frombuffer(next(reader), np.uint8).reshape(320, 320, 3).astype(int)
  reader.close()
  segment = Store(labeling_app.store_path(minatar_workdir)).segment("m0a")
  drawn = frames.colour(segment["obs"][0].reshape(BREAKOUT)).astype(int)  # [10, 10, 3]
  centres = decoded[16::32, 16::32]  # each cell's middle pixel (H.264 is lossy)
  assert np.mean(np.abs(centres - drawn)) < 8, np.abs(centres - drawn).max()
