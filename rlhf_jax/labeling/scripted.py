"""A scripted person: labels through the app's HTTP API as the oracle would.

  python -m rlhf_jax.labeling.scripted --workdir=runs/x --url=http://127.0.0.1:8000

It asks the app for a pair (as the page does), judges it by the segments' true returns
(read from the workdir's store: the one thing a person would judge from the clips), and
posts the answer. For demos and tests of `teacher=human` without a person at hand.
"""

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np

from rlhf_jax.labeling import app
from rlhf_jax.labeling.store import Store


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on right now."""
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def start_app(workdir: str, port: int, clips: bool = True, render_processes: int = 1, log=None):
  """Starts `python -m rlhf_jax.label` on `port` and returns its Popen once it answers.
  Its output goes to the file `log`, or is dropped (stderr kept for the error)."""
  command = [
    sys.executable, "-m", "rlhf_jax.label", f"--workdir={workdir}", f"--port={port}",
    f"--clips={str(clips).lower()}", f"--render_processes={render_processes}",
  ]  # fmt: skip
  if log is None:
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  else:
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
  deadline = time.time() + 120
  while time.time() < deadline and server.poll() is None:
    try:
      urllib.request.urlopen(f"http://127.0.0.1:{port}/api/labels", timeout=1)
      return server
    except (urllib.error.URLError, ConnectionError):
      time.sleep(0.2)
  server.kill()
  said = server.stderr.read().decode() if log is None else f"see {log.name}"
  raise RuntimeError(f"the labeling app did not start: {said}")


def oracle_choice(store: Store, pair_id: int) -> str:
  first, second = (store.segment(segment_id) for segment_id in store.pair(pair_id))
  returns = [float(np.sum(s["true_reward"] * s["mask"])) for s in (first, second)]
  if returns[0] == returns[1]:
    return "equal"
  return "left" if returns[0] > returns[1] else "right"


class ScriptedPerson:
  def __init__(self, workdir: str, url: str, client: str = "scripted", token: str | None = None):
    self.store = Store(app.store_path(workdir))
    self.url, self.client, self.token = url.rstrip("/"), client, token
    self.given = 0

  def _request(self, path: str, body: dict | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if self.token:
      headers["X-Token"] = self.token
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(self.url + path, data=data, headers=headers)
    # A busy machine or a restarting app: try the connection again for a while.
    for attempt in range(40):
      try:
        with urllib.request.urlopen(request, timeout=30) as answer:
          return json.load(answer)
      except urllib.error.HTTPError:
        raise  # the app answered: a real error
      except (ConnectionError, urllib.error.URLError):
        if attempt == 39:
          raise
        time.sleep(0.5)
    raise AssertionError("unreachable")

  def label_one(self) -> bool:
    """Labels the next pair the app hands out; False when none is waiting."""
    pair = self._request(f"/api/next?client={self.client}")["pair"]
    if pair is None:
      return False
    choice = oracle_choice(self.store, pair["pair_id"])
    self._request(
      "/api/label", {"pair_id": pair["pair_id"], "choice": choice, "client": self.client}
    )
    self.given += 1
    return True

  def run(self, stop=lambda: False, idle_seconds: float = 0.05, seconds_per_label: float = 0.0):
    while not stop():
      if self.label_one():
        time.sleep(seconds_per_label)
      else:
        time.sleep(idle_seconds)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--url", default="http://127.0.0.1:8000")
  parser.add_argument("--token", default=None)
  parser.add_argument("--seconds_per_label", type=float, default=0.0, help="a person's pace")
  args = parser.parse_args(argv)
  person = ScriptedPerson(args.workdir, args.url, token=args.token)
  try:
    person.run(seconds_per_label=args.seconds_per_label)
  except KeyboardInterrupt:
    print(f"labelled {person.given} pairs")


if __name__ == "__main__":
  main()
