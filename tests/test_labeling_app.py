"""The label store and the labeling app's HTTP API (no browser, no clips)."""

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from rlhf_jax.labeling import app as labeling_app
from rlhf_jax.labeling.scripted import free_port, start_app
from rlhf_jax.labeling.store import Store

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_segment(value: float, length: int = 4) -> dict:
  return {
    "obs": np.full((length, 3), value, np.float32),
    "action": np.zeros((length, 1), np.float32),
    "next_obs": np.full((length, 3), value, np.float32),
    "true_reward": np.full((length,), value, np.float32),
    "mask": np.ones((length,), np.float32),
    "qpos": np.zeros((length, 2), np.float32),
  }


def add_pairs(store: Store, count: int, start: int = 0) -> list[int]:
  pairs = [
    (f"s{start + i}a", fake_segment(i), f"s{start + i}b", fake_segment(-i)) for i in range(count)
  ]
  return store.add_pairs(pairs, env_steps=0)


@pytest.fixture
def workdir(tmp_path):
  store = Store(labeling_app.store_path(str(tmp_path)))
  add_pairs(store, 5)
  return str(tmp_path)


def snapshot(workdir):
  store = Store(labeling_app.store_path(workdir))
  return store.labels(), store.counts()


def post(client, path, body, **kwargs):
  return client.post(path, data=json.dumps(body), content_type="application/json", **kwargs)


def test_a_label_is_stored_and_undone(workdir):
  client = labeling_app.create_app(workdir, clips=False).test_client()
  pair = client.get("/api/next?client=ann").get_json()["pair"]
  assert pair == {"pair_id": 1, "left": None, "right": None}
  answer = post(client, "/api/label", {"pair_id": 1, "choice": "left", "client": "ann"})
  assert answer.status_code == 200 and answer.get_json()["progress"]["labelled"] == 1
  assert [(r["pair_id"], r["choice"], r["client"]) for r in snapshot(workdir)[0]] == [
    (1, "left", "ann")
  ]
  assert client.get("/api/next?client=ann").get_json()["pair"]["pair_id"] == 2
  undone = post(client, "/api/undo", {"client": "ann"})
  assert undone.status_code == 200 and undone.get_json()["pair_id"] == 1
  assert snapshot(workdir)[0] == []
  # The undone pair comes back to the same labeller before any other.
  assert client.get("/api/next?client=ann").get_json()["pair"]["pair_id"] == 1


@pytest.mark.parametrize(
  "path, body, status, message",
  [
    ("/api/label", {"pair_id": 99, "choice": "left", "client": "ann"}, 404, "no pair 99"),
    ("/api/label", {"pair_id": 2**70, "choice": "left", "client": "ann"}, 404, "no pair"),
    ("/api/label", {"pair_id": -1, "choice": "left", "client": "ann"}, 404, "no pair -1"),
    ("/api/label", {"pair_id": 1, "choice": "up", "client": "ann"}, 400, "choice must be"),
    ("/api/label", {"pair_id": "1", "choice": "left", "client": "ann"}, 400, "integer"),
    ("/api/label", {"pair_id": True, "choice": "left", "client": "ann"}, 400, "integer"),
    ("/api/label", {"pair_id": 1, "choice": "left"}, 400, "name the labeller"),
    ("/api/label", ["not", "an", "object"], 400, "JSON object"),
    ("/api/label", {"pair_id": 2, "choice": "left", "client": "bob"}, 409, "someone else"),
    ("/api/label", {"pair_id": 3, "choice": "right", "client": "ann"}, 409, "already labelled"),
    ("/api/undo", {"client": "bob"}, 409, "nothing to undo"),
    ("/api/undo", {"client": "cid"}, 409, "already been used in training"),
  ],
)
def test_malformed_requests_get_a_4xx_and_change_nothing(workdir, path, body, status, message):
  store = Store(labeling_app.store_path(workdir))
  store.submit(3, "left", "ann")
  store.submit(4, "equal", "cid")
  store.take_labels(chunk=1)  # the trainer has used the labels of pairs 3 and 4
  store.next_pair("ann", need_clips=False)  # ann holds pair 1 ...
  store.next_pair("dan", need_clips=False)  # ... and dan holds pair 2
  before = snapshot(workdir)
  client = labeling_app.create_app(workdir, clips=False).test_client()
  answer = post(client, path, body)
  assert answer.status_code == status
  assert message in answer.get_json()["error"]
  assert snapshot(workdir) == before


def test_a_body_that_is_not_json_is_refused(workdir):
  client = labeling_app.create_app(workdir, clips=False).test_client()
  answer = client.post("/api/label", data="pair_id=1", content_type="text/plain")
  assert answer.status_code == 400 and "JSON object" in answer.get_json()["error"]
  assert snapshot(workdir)[0] == []


def test_a_token_is_required_when_set(workdir):
  client = labeling_app.create_app(workdir, token="s3cret", clips=False).test_client()
  body = {"pair_id": 1, "choice": "left", "client": "ann"}
  assert post(client, "/api/label", body).status_code == 401
  assert post(client, "/api/label", body, headers={"X-Token": "wrong"}).status_code == 403
  assert snapshot(workdir)[0] == []
  assert client.get("/").status_code == 401
  assert post(client, "/api/label", body, headers={"X-Token": "s3cret"}).status_code == 200
  # The page, opened once with ?token=, keeps it in a cookie for its own requests.
  assert client.get("/?token=s3cret").status_code == 200
  assert client.get("/api/next?client=ann").status_code == 200


def test_without_a_token_only_loopback_names_are_answered(workdir):
  client = labeling_app.create_app(workdir, clips=False).test_client()
  body = {"pair_id": 1, "choice": "left", "client": "ann"}
  answer = post(client, "/api/label", body, headers={"Host": "evil.example:8000"})
  assert answer.status_code == 403 and "127.0.0.1 or localhost" in answer.get_json()["error"]
  assert snapshot(workdir)[0] == []
  for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000"):
    assert client.get("/api/labels", headers={"Host": host}).status_code == 200, host


def test_the_cli_refuses_a_public_bind_without_a_token(tmp_path):
  command = [sys.executable, "-m", "rlhf_jax.label", f"--workdir={tmp_path}", "--host=0.0.0.0"]
  result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
  assert result.returncode != 0 and "--token" in result.stderr


def test_clips_are_served_only_from_the_clip_folder(workdir):
  os.makedirs(os.path.join(workdir, "clips"))
  with open(os.path.join(workdir, "clips", "s0a.mp4"), "wb") as clip:
    clip.write(b"\x00\x00\x00\x18ftypmp42")
  client = labeling_app.create_app(workdir, clips=False).test_client()
  answer = client.get("/clips/s0a.mp4")
  assert answer.status_code == 200 and answer.data.startswith(b"\x00\x00\x00\x18ftyp")
  for name in ("../labels.sqlite", "%2e%2e/labels.sqlite", "..%2flabels.sqlite", "/etc/passwd"):
    answer = client.get(f"/clips/{name}", follow_redirects=True)
    assert answer.status_code == 404 and b"root:" not in answer.data, name


def test_the_labels_page_escapes_text(workdir):
  client = labeling_app.create_app(workdir, clips=False).test_client()
  name = "<script>alert(1)</script>"
  post(client, "/api/label", {"pair_id": 1, "choice": "skip", "client": name})
  page = client.get("/labels").get_data(as_text=True)
  assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and name not in page


def test_two_labellers_at_once_lose_nothing_and_never_share_a_pair(tmp_path):
  store = Store(labeling_app.store_path(str(tmp_path)))
  add_pairs(store, 60)
  app = labeling_app.create_app(str(tmp_path), clips=False)
  seen = {"ann": [], "bob": []}

  def label_all(name):
    client = app.test_client()
    while (pair := client.get(f"/api/next?client={name}").get_json()["pair"]) is not None:
      seen[name].append(pair["pair_id"])
      body = {"pair_id": pair["pair_id"], "choice": "left", "client": name}
      assert post(client, "/api/label", body).status_code == 200

  threads = [threading.Thread(target=label_all, args=(name,)) for name in seen]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(timeout=120)
  assert not set(seen["ann"]) & set(seen["bob"])
  assert seen["ann"] and seen["bob"]
  labels = store.labels()
  assert sorted(r["pair_id"] for r in labels) == list(range(1, 61))
  assert {r["pair_id"]: r["client"] for r in labels} == {
    pair_id: name for name, ids in seen.items() for pair_id in ids
  }


def start_server(workdir: str, port: int, clips: bool = False) -> subprocess.Popen:
  return start_app(workdir, port, clips=clips)


def http_post(port: int, path: str, body: dict) -> dict:
  request = urllib.request.Request(
    f"http://127.0.0.1:{port}{path}",
    data=json.dumps(body).encode(),
    headers={"Content-Type": "application/json"},
  )
  with urllib.request.urlopen(request, timeout=10) as answer:
    return json.load(answer)


def test_labels_survive_killing_the_server(workdir):
  port = free_port()
  server = start_server(workdir, port)
  try:
    for pair_id, choice in ((1, "left"), (2, "right"), (3, "equal")):
      http_post(port, "/api/label", {"pair_id": pair_id, "choice": choice, "client": "ann"})
  finally:
    server.kill()  # SIGKILL: no chance to flush anything
    server.wait()
  server = start_server(workdir, port)
  try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/labels", timeout=10) as answer:
      labels = json.load(answer)["labels"]
  finally:
    server.kill()
    server.wait()
  assert [(r["pair_id"], r["choice"]) for r in labels] == [(1, "left"), (2, "right"), (3, "equal")]


def test_labels_used_after_a_checkpoint_are_used_again_on_resume(workdir):
  store = Store(labeling_app.store_path(workdir))
  store.submit(1, "left", "ann")
  assert [r["pair_id"] for r in store.take_labels(chunk=2)] == [1]
  store.submit(2, "right", "ann")
  assert [r["pair_id"] for r in store.take_labels(chunk=3)] == [2]
  store.submit(3, "skip", "ann")
  assert store.forget_ingested_after(2) == 1  # resumed from checkpoint 2: pair 2 is new again
  rows = store.take_labels(chunk=3)
  assert [(r["pair_id"], r["label"]) for r in rows] == [(2, 0.0), (3, None)]
  assert store.counts()["unused"] == 0


def test_a_fresh_label_waits_out_the_grace_period(workdir):
  now = [1000.0]
  store = Store(labeling_app.store_path(workdir), clock=lambda: now[0])
  store.submit(1, "left", "ann")
  now[0] += 5
  assert store.take_labels(chunk=1, older_than=10) == []  # still undoable
  now[0] += 6
  assert [r["pair_id"] for r in store.take_labels(chunk=1, older_than=10)] == [1]


def test_a_failing_clip_renderer_backs_off_and_recovers(workdir, capsys):
  """Each failure in a row doubles the wait (up to a cap); a success resets it."""
  renderer = labeling_app.ClipRenderer(workdir, poll_seconds=1.0)
  outcomes = iter([RuntimeError("no GL")] * 8 + [3, 0])
  waits = []

  def render_waiting():
    outcome = next(outcomes)
    if isinstance(outcome, Exception):
      raise outcome
    return outcome

  def wait(seconds):
    waits.append(seconds)
    if len(waits) == 9:
      renderer.stopped.set()

  renderer.render_waiting = render_waiting
  renderer.stopped.wait = wait
  renderer.run()
  assert waits == [2, 4, 8, 16, 32, 60, 60, 60, 1.0]
  printed = capsys.readouterr().out
  assert "rendering clips failed (8 in a row): RuntimeError('no GL'); retrying in 60 s" in printed
