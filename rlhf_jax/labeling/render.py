"""Clips of segments: MuJoCo's offscreen renderer, headless, encoded as H.264 MP4.

A segment keeps the simulator's positions (`qpos`) of each step, so it renders without
the simulator's state: set qpos, run forward kinematics, draw. The clip plays at the
env's real-time rate: every `stride`-th step is a frame, with `stride` chosen so the
frame rate is at most `max_fps`. Padded steps (after the episode ended) repeat the last
real frame, so two clips of one pair last equally long and loop in sync.

MuJoCo picks its GL backend from MUJOCO_GL when it is imported; the rendering processes
set it to EGL (Mesa's software renderer works on a CPU-only machine), and start over with
OSMesa if EGL fails. MP4 with
H.264 (yuv420p, moov atom first) plays in every browser; the encoder is the ffmpeg
binary that the `imageio-ffmpeg` wheel ships, so nothing is installed by hand.

Clips are cached on disk by segment id, and a `ClipPool` renders many at once in spawned
processes. MinAtar segments have no simulator to render: their frames are drawn from the
observations (rlhf_jax/labeling/frames.py) and encoded here.
"""

import concurrent.futures
import multiprocessing
import os
import pickle

import numpy as np

MAX_FPS = 30.0
WIDTH, HEIGHT = 320, 240

_worker = {}  # in a rendering process: the model, its data and renderer, built once


def frame_stride(dt: float, max_fps: float = MAX_FPS) -> int:
  """Steps per frame so that the clip runs in real time at no more than `max_fps`."""
  return max(1, int(np.ceil(1.0 / (dt * max_fps) - 1e-9)))


def clip_path(clip_dir: str, segment_id: str) -> str:
  return os.path.join(clip_dir, f"{segment_id}.mp4")


def gl_backends() -> list[str]:
  """MUJOCO_GL if set, else EGL then OSMesa."""
  chosen = os.environ.get("MUJOCO_GL")
  return [chosen] if chosen else ["egl", "osmesa"]


def camera_for(mj_model):
  """The model's first camera (hopper's and walker's track the body), else a free camera
  looking down from closer than MuJoCo's default, which leaves reacher's arm tiny."""
  import mujoco  # noqa: PLC0415

  if mj_model.ncam > 0:
    return 0
  camera = mujoco.MjvCamera()
  mujoco.mjv_defaultFreeCamera(mj_model, camera)
  camera.distance *= 0.45
  camera.elevation = -60.0
  return camera


def render_frames(mj_model, renderer, data, qpos: np.ndarray, mask: np.ndarray, stride: int):
  """Frames uint8 [F, H, W, 3] of the steps 0, stride, 2·stride, ... of one segment."""
  import mujoco  # noqa: PLC0415

  camera = camera_for(mj_model)
  valid = max(1, int(np.sum(mask > 0)))
  frames = []
  for step in range(0, len(qpos), stride):
    data.qpos[:] = qpos[min(step, valid - 1)]  # padded steps hold the last real pose
    mujoco.mj_forward(mj_model, data)
    renderer.update_scene(data, camera=camera)
    frames.append(renderer.render().copy())
  return np.stack(frames)


def encode_mp4(frames: np.ndarray, path: str, fps: float) -> None:
  """Writes frames [F, H, W, 3] as H.264 MP4 (written to a temporary name, then moved,
  so a clip on disk is always whole)."""
  import imageio_ffmpeg  # noqa: PLC0415

  temporary = path + ".part"
  height, width = frames.shape[1:3]
  writer = imageio_ffmpeg.write_frames(
    temporary,
    (width, height),
    fps=fps,
    codec="libx264",
    pix_fmt_out="yuv420p",
    output_params=["-movflags", "+faststart", "-f", "mp4"],
    macro_block_size=16,
    ffmpeg_log_level="error",
  )
  writer.send(None)
  for frame in frames:
    writer.send(np.ascontiguousarray(frame))
  writer.close()
  os.replace(temporary, path)


def _init_worker(backend: str, model_bytes: bytes, size: tuple[int, int]):
  """A rendering process: MUJOCO_GL is set before MuJoCo is imported (it is read then)."""
  os.environ["MUJOCO_GL"] = backend
  import mujoco  # noqa: PLC0415

  model = pickle.loads(model_bytes)
  width, height = size
  _worker.update(
    model=model, data=mujoco.MjData(model), renderer=mujoco.Renderer(model, height, width)
  )


def _render_in_worker(job) -> str:
  segment, path, dt = job
  stride = frame_stride(dt)
  model, renderer, data = _worker["model"], _worker["renderer"], _worker["data"]
  frames = render_frames(model, renderer, data, segment["qpos"], segment["mask"], stride)
  encode_mp4(frames, path, fps=1.0 / (dt * stride))
  return path


class ClipPool:
  """Processes that render clips of one model. They are spawned (a forked JAX process is
  unsafe, and MuJoCo picks its GL backend at import); the first backend of
  `gl_backends()` whose processes render is kept."""

  def __init__(self, mj_model, dt: float, processes: int = 2, size=(WIDTH, HEIGHT)):
    self.model_bytes = pickle.dumps(mj_model)
    self.dt, self.processes, self.size = dt, max(1, processes), tuple(size)
    self.backend, self._pool = None, None

  def render(self, jobs: list[tuple[dict, str]]) -> list[str]:
    """Renders the (segment, path) jobs whose clip is not on disk yet; returns the paths.
    A segment is a dict with qpos [K, q] and mask [K]."""
    todo = [(segment, path, self.dt) for segment, path in jobs if not os.path.exists(path)]
    errors = []
    for backend in [self.backend] if self.backend else gl_backends():
      try:
        if self._pool is None:
          self._pool = concurrent.futures.ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(backend, self.model_bytes, self.size),
          )
        list(self._pool.map(_render_in_worker, todo))
        self.backend = backend
        return [path for _, path in jobs]
      except concurrent.futures.process.BrokenProcessPool as error:
        errors.append(f"{backend}: {error}")
        self.close()
    raise RuntimeError(
      "MuJoCo could not render offscreen (" + "; ".join(errors) + "). On Debian, install "
      "libegl1 libegl-mesa0 libgl1-mesa-dri (EGL) or libosmesa6 (OSMesa)."
    )

  def close(self) -> None:
    if self._pool is not None:
      self._pool.shutdown(cancel_futures=True)
      self._pool = None


def clip_meta(config, trainer) -> dict:
  """What rendering a run's segments again needs (kept in the store and in datasets); for
  frame envs (MinAtar) `frame_shape` too, which has `frames.clip_pool` draw the frames."""
  from rlhf_jax import envs  # noqa: PLC0415

  meta = {
    "env_name": config.env.name,
    "backend": config.env.backend,
    "dt": envs.control_dt(trainer.env, config.env.action_repeat),
    "segment_length": trainer.preferences.segment_length,
  }
  shape = envs.frame_shape(trainer.env)
  if shape is not None:  # MinAtar: the observations are the frames to draw
    meta["frame_shape"] = list(shape)
  return meta


def mj_model_of(env_name: str, backend: str):
  """The MuJoCo model that Brax builds for `env_name` (what the clips show)."""
  from rlhf_jax import envs  # noqa: PLC0415 (imports Brax and JAX: only when needed)

  return envs.make_env(env_name, backend).sys.mj_model
