"""End to end in headless Chromium: real clips play, a person labels with keys and a button
(MuJoCo clips; MinAtar's drawn frames too).

Needs Debian's chromium (`.ci/run` installs it) and the `playwright` package, which
drives that browser (no browser download). Set RLHF_JAX_SCREENSHOT=path to keep a
screenshot of the labeling page (the README's comes from here).
"""

import contextlib
import os
import shutil

import numpy as np
import pytest

from rlhf_jax.labeling import app as labeling_app
from rlhf_jax.labeling import render
from rlhf_jax.labeling.scripted import free_port
from rlhf_jax.labeling.store import Store
from rlhf_jax.lm import human
from tests.test_frames import minatar_workdir  # noqa: F401  (a fixture)
from tests.test_labeling_app import start_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--autoplay-policy=no-user-gesture-required",
]


def pendulum_segment(rng, length=30) -> dict:
  """A segment of inverted_pendulum (qpos: cart position, pole angle) swinging at random."""
  angle = np.cumsum(rng.normal(0, 0.05, length))
  cart = np.cumsum(rng.normal(0, 0.02, length))
  qpos = np.stack([cart, angle], axis=1).astype(np.float32)
  return {
    "obs": np.zeros((length, 4), np.float32),
    "action": np.zeros((length, 1), np.float32),
    "next_obs": np.zeros((length, 4), np.float32),
    "true_reward": np.ones((length,), np.float32),
    "mask": np.ones((length,), np.float32),
    "qpos": qpos,
  }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A store with 5 pairs whose clips are rendered for real (MuJoCo, EGL or OSMesa)."""
  workdir = str(tmp_path_factory.mktemp("labeling"))
  store = Store(labeling_app.store_path(workdir))
  store.set_meta({"env_name": "inverted_pendulum", "backend": "spring", "dt": 0.04})
  rng = np.random.default_rng(0)
  pairs = [(f"p{i}a", pendulum_segment(rng), f"p{i}b", pendulum_segment(rng)) for i in range(5)]
  store.add_pairs(pairs, env_steps=0)
  renderer = labeling_app.ClipRenderer(workdir, processes=2)
  try:
    assert renderer.render_waiting() == 5
  finally:
    renderer.close()
  return workdir


def test_clips_are_h264_mp4_at_real_time(workdir):
  import imageio_ffmpeg

  path = render.clip_path(os.path.join(workdir, "clips"), "p0a")
  frames, info = imageio_ffmpeg.count_frames_and_secs(path)
  assert frames == 30 and info == pytest.approx(30 * 0.04, abs=0.05)  # 25 fps, 1.2 s
  reader = imageio_ffmpeg.read_frames(path)
  meta = next(reader)
  assert meta["codec"].startswith("h264") and meta["size"] == (render.WIDTH, render.HEIGHT)
  first = next(reader)
  pixels = np.frombuffer(first, np.uint8)
  assert pixels.std() > 5  # a scene, not a blank frame
  reader.close()


@contextlib.contextmanager
def playing_page(workdir: str, video_check: str = ""):
  """The labeling app on `workdir` in headless Chromium, once pair 1 shows and both its
  clips load and play (their clocks advance; `video_check`: a further JS condition on each
  video `v`). Yields (page, port)."""
  if CHROMIUM is None:
    pytest.fail("Chromium is missing: `apt-get install chromium` (as .ci/run does)")
  from playwright.sync_api import sync_playwright

  port = free_port()
  server = start_server(workdir, port, clips=True)
  try:
    with sync_playwright() as playwright:
      browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
      page = browser.new_page(viewport={"width": 880, "height": 480})
      page.goto(f"http://127.0.0.1:{port}/")
      page.locator("#status").filter(has_text="Pair 1").wait_for()
      page.wait_for_function(
        "[...document.querySelectorAll('video')].every(v => v.readyState >= 2 && !v.paused"
        f" && v.currentTime > 0.2{video_check})",
        timeout=20_000,
      )
      yield page, port
      browser.close()
  finally:
    server.kill()
    server.wait()


def test_label_in_the_browser(workdir):
  with playing_page(workdir) as (page, port):
    status = page.locator("#status")
    if os.environ.get("RLHF_JAX_SCREENSHOT"):
      page.screenshot(path=os.environ["RLHF_JAX_SCREENSHOT"])
    for key, next_pair in (("ArrowLeft", 2), ("ArrowRight", 3), ("=", 4)):
      page.keyboard.press(key)
      status.filter(has_text=f"Pair {next_pair}").wait_for()
    page.click("#choose-skip")
    status.filter(has_text="Pair 5").wait_for()
    page.keyboard.press("u")
    status.filter(has_text="Took back the label of pair 4").wait_for()
    progress = page.locator("#progress").inner_text()
    page.goto(f"http://127.0.0.1:{port}/labels")
    shown = page.locator("td.choice").all_inner_texts()
  labels = Store(labeling_app.store_path(workdir)).labels()
  assert [(r["pair_id"], r["choice"]) for r in labels] == [(1, "left"), (2, "right"), (3, "equal")]
  assert progress == "3 labelled · 2 waiting"
  assert shown == ["left", "right", "equal"]


def test_label_a_minatar_pair_in_the_browser(minatar_workdir):  # noqa: F811
  """MinAtar clips (frames drawn by labeling/frames.py) play in the page like MuJoCo's."""
  with playing_page(minatar_workdir, " && v.videoWidth == 320") as (page, _):
    page.keyboard.press("ArrowRight")
    page.locator("#status").filter(has_text="Pair 2").wait_for()
  labels = Store(labeling_app.store_path(minatar_workdir)).labels()
  assert [(r["pair_id"], r["choice"]) for r in labels] == [(1, "right")]


def test_label_text_pairs_with_the_keys_across_an_app_restart(tmp_path):
  """A language model's text pairs (lm/human.py queues them): the page shows the prompt
  and both completions as text, the keys label them, and a killed and restarted app
  loses nothing; the answers come back as the pipeline's comparisons."""
  if CHROMIUM is None:
    pytest.fail("Chromium is missing: `apt-get install chromium` (as .ci/run does)")
  from playwright.sync_api import sync_playwright

  from tests.test_lm_human import FIRSTS, PROMPTS, SECONDS

  workdir = str(tmp_path)
  store = Store(labeling_app.store_path(workdir))
  human.queue(store, "c", PROMPTS, FIRSTS, SECONDS)
  port = free_port()
  server = start_server(workdir, port, clips=True)
  try:
    with sync_playwright() as playwright:
      browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
      page = browser.new_page(viewport={"width": 880, "height": 480})
      page.goto(f"http://127.0.0.1:{port}/")
      status = page.locator("#status")
      status.filter(has_text="Pair 1").wait_for()
      shown = [
        page.locator(f"#{name}").inner_text().strip()
        for name in ("prompt", "left-text", "right-text")
      ]
      assert shown == [PROMPTS[0], FIRSTS[0].strip(), SECONDS[0].strip()]
      assert page.locator("#clips").is_hidden() and page.locator("#texts").is_visible()
      assert "completion" in page.locator("#question").inner_text()
      page.keyboard.press("ArrowLeft")
      status.filter(has_text="Pair 2").wait_for()
      page.keyboard.press("ArrowRight")
      status.filter(has_text="Pair 3").wait_for()
      server.kill()  # SIGKILL while the page shows pair 3
      server.wait()
      server = start_server(workdir, port, clips=True)
      page.keyboard.press("=")
      status.filter(has_text="Pair 4").wait_for()
      # Markup in a completion is shown as text, not run.
      assert page.locator("#left-text").inner_text().strip() == FIRSTS[3].strip()
      assert page.locator("#left-text script").count() == 0
      page.keyboard.press("s")
      status.filter(has_text="No pairs are waiting").wait_for()
      browser.close()
  finally:
    server.kill()
    server.wait()
  labels = Store(labeling_app.store_path(workdir)).labels()
  assert [(r["pair_id"], r["choice"]) for r in labels] == [
    (1, "left"),
    (2, "right"),
    (3, "equal"),
    (4, "skip"),
  ]
  assert [(row["chosen"], row["tie"]) for row in human.comparisons(store, [1, 2, 3, 4])] == [
    (FIRSTS[0], False),
    (SECONDS[1], False),
    (FIRSTS[2], True),
  ]
