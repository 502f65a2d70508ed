"""The labeling web app: two clips side by side, a person says which is better.

  python -m rlhf_jax.label --workdir=runs/x            # then open http://127.0.0.1:8000

Flask, because it is already installed with Brax (its viewer uses it), needs no event
loop, and its threaded development server is enough for a handful of labellers on one
machine. All state lives in the SQLite store (rlhf_jax/labeling/store.py), never in the
server, so the app can be killed and restarted at any time without losing a label.

The JSON API (what the page uses; a script can use it too):
  GET  /api/next?client=C     the pair C should label: {"pair": {pair_id, left, right} or
                              null, "progress": {...}}; the pair is held for C alone.
                              A text pair (a language model's two completions of a
                              prompt) has {pair_id, prompt, left_text, right_text}
  POST /api/label             {"pair_id", "choice": left|right|equal|skip, "client"}
  POST /api/undo              {"client"}: takes back C's newest label
  GET  /api/labels            every label given
  GET  /labels                the same as a page
  GET  /clips/<segment>.mp4   clips, served only from the clip folder

Errors are JSON {"error": message} with a 4xx status, and change nothing. A client is
named by the `client` field or query parameter, else by a cookie the page sets.

Serving beyond loopback needs a token (`--token`): every request must then carry it as
`?token=` (the page keeps it in a cookie) or an `X-Token` header.
"""

import hmac
import ipaddress
import os
import threading
import time
import uuid

import flask
from werkzeug.exceptions import HTTPException

from rlhf_jax.labeling import frames, render
from rlhf_jax.labeling.store import STORE_NAME, LabelError, Store

CLIP_DIR_NAME = "clips"
MAX_RETRY_SECONDS = 60.0  # the longest a failing clip renderer waits before it tries again


def store_path(workdir: str) -> str:
  return os.path.join(workdir, STORE_NAME)


def is_loopback(host: str) -> bool:
  if host == "localhost":
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def create_app(workdir: str, token: str | None = None, clips: bool = True) -> flask.Flask:
  """The app for the store in `workdir`. With `clips=False` pairs are handed out without
  waiting for their clips (for scripts that label through the API)."""
  store = Store(store_path(workdir))  # creates the workdir if need be
  clip_dir = os.path.join(workdir, CLIP_DIR_NAME)
  app = flask.Flask(__name__)

  def fail(status: int, message: str):
    flask.abort(flask.make_response(flask.jsonify(error=message), status))

  @app.errorhandler(LabelError)
  def label_error(error: LabelError):
    return flask.jsonify(error=str(error)), error.status

  @app.errorhandler(HTTPException)
  def http_error(error: HTTPException):
    if flask.request.path.startswith("/api/"):
      return flask.jsonify(error=error.description), error.code
    return error

  @app.before_request
  def check_token():
    if token is None:
      # Without a token only this machine may ask, by name too: a page elsewhere that
      # rebinds its own domain name to 127.0.0.1 (DNS rebinding) is refused.
      if not is_loopback(flask.request.host.rsplit(":", 1)[0].strip("[]")):
        fail(403, "this server answers only requests to 127.0.0.1 or localhost")
      return
    given = (
      flask.request.headers.get("X-Token")
      or flask.request.args.get("token")
      or flask.request.cookies.get("token")
    )
    if not given:
      fail(401, "this server needs a token: add ?token=... to the address")
    if not hmac.compare_digest(given.encode(), token.encode()):
      fail(403, "wrong token")

  @app.after_request
  def remember(response):
    if token is not None and flask.request.args.get("token") == token:
      response.set_cookie("token", token, httponly=True, samesite="Strict")
    if "client" not in flask.request.cookies and flask.request.path == "/":
      response.set_cookie("client", uuid.uuid4().hex, samesite="Strict")
    return response

  def client_name(body: dict | None = None) -> str:
    name = (body or {}).get("client") or flask.request.args.get("client")
    name = name or flask.request.cookies.get("client")
    if not isinstance(name, str) or not name or len(name) > 100:
      fail(400, "name the labeller: a 'client' string of 1-100 characters")
    return name

  def json_body() -> dict:
    body = flask.request.get_json(silent=True)
    if not isinstance(body, dict):
      fail(400, "the request body must be a JSON object")
    return body

  def clip_url(segment_id: str):
    return flask.url_for("clip", name=f"{segment_id}.mp4") if clips else None

  @app.get("/")
  def page():
    return flask.render_template("label.html")

  @app.get("/api/next")
  def next_pair():
    pair = store.next_pair(client_name(), need_clips=clips)
    if pair is not None:
      first, second = store.segment(pair["first"]), store.segment(pair["second"])
      if "completion" in first:  # text: nothing to play
        pair = {
          "pair_id": pair["pair_id"],
          "prompt": str(first["prompt"]),
          "left_text": str(first["completion"]),
          "right_text": str(second["completion"]),
        }
      else:
        pair = {
          "pair_id": pair["pair_id"],
          "left": clip_url(pair["first"]),
          "right": clip_url(pair["second"]),
        }
    return flask.jsonify(pair=pair, progress=store.counts())

  @app.post("/api/label")
  def label():
    body = json_body()
    store.submit(body.get("pair_id"), body.get("choice"), client_name(body))
    return flask.jsonify(ok=True, progress=store.counts())

  @app.post("/api/undo")
  def undo():
    pair_id = store.undo(client_name(json_body()))
    return flask.jsonify(ok=True, pair_id=pair_id, progress=store.counts())

  @app.get("/api/labels")
  def labels_json():
    return flask.jsonify(labels=store.labels())

  @app.get("/labels")
  def labels_page():
    rows = store.labels()
    for row in rows:
      row["time"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["created_at"]))
    return flask.render_template("labels.html", labels=rows, progress=store.counts())

  @app.get("/clips/<path:name>")
  def clip(name: str):
    # send_from_directory joins safely: a name that leaves clip_dir is a 404.
    return flask.send_from_directory(clip_dir, name, mimetype="video/mp4", max_age=3600)

  return app


class ClipRenderer(threading.Thread):
  """Renders the clips of waiting pairs ahead of the labeller, a few pairs at a time."""

  def __init__(self, workdir: str, processes: int = 2, poll_seconds: float = 1.0):
    super().__init__(daemon=True)
    self.store = Store(store_path(workdir))
    self.clip_dir = os.path.join(workdir, CLIP_DIR_NAME)
    self.processes, self.poll_seconds = processes, poll_seconds
    self.stopped = threading.Event()
    self.pool = None  # a ClipPool or FrameClips, once the trainer has said which env it is

  def render_waiting(self) -> int:
    """One round: renders up to 4·processes waiting pairs; returns how many."""
    pairs = self.store.pairs_without_clips(limit=4 * self.processes)
    if not pairs:
      return 0
    if self.pool is None:  # MuJoCo's renderer, or frames drawn by hand (MinAtar)
      self.pool = frames.clip_pool(self.store.meta(), self.processes)
    os.makedirs(self.clip_dir, exist_ok=True)
    jobs = {}
    for _, first, second in pairs:
      for segment_id in (first, second):
        path = render.clip_path(self.clip_dir, segment_id)
        jobs[segment_id] = (self.store.segment(segment_id), path)
    self.pool.render(list(jobs.values()))
    self.store.mark_clips_ready([pair_id for pair_id, _, _ in pairs])
    return len(pairs)

  def close(self) -> None:
    if self.pool is not None:
      self.pool.close()

  def run(self):
    failures = 0  # in a row: each doubles the wait, up to MAX_RETRY_SECONDS
    while not self.stopped.is_set():
      wait = self.poll_seconds
      try:
        rendered = self.render_waiting()
        failures = 0
        if rendered:
          continue
      except Exception as error:  # noqa: BLE001 (keep serving; say what failed)
        failures += 1
        wait = min(self.poll_seconds * 2**failures, MAX_RETRY_SECONDS)
        print(
          f"rendering clips failed ({failures} in a row): {error!r}; retrying in {wait:.0f} s",
          flush=True,
        )
      self.stopped.wait(wait)
    self.close()
