"""Command line: the labeling web app for a run's workdir.

  python -m rlhf_jax.label --workdir=runs/hopper_human          # http://127.0.0.1:8000
  python -m rlhf_jax.label --workdir=runs/x --host=0.0.0.0 --token=$(openssl rand -hex 16)

The trainer (`--config.teacher=human`) and this app share `<workdir>/labels.sqlite`;
start and stop either one at any time. See rlhf_jax/labeling/app.py for the HTTP API.
"""

import logging

from absl import app, flags

from rlhf_jax.labeling import app as labeling_app

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir (holds labels.sqlite).")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to bind; beyond loopback needs --token.")
_PORT = flags.DEFINE_integer("port", 8000, "Port to listen on.")
_TOKEN = flags.DEFINE_string("token", None, "Secret every request must carry (?token=...).")
_RENDER_PROCESSES = flags.DEFINE_integer("render_processes", 2, "Processes rendering clips.")
_CLIPS = flags.DEFINE_bool(
  "clips", True, "Render clips; without, pairs are handed out bare (for API scripts)."
)


def main(argv):
  del argv
  if _WORKDIR.value is None:
    raise app.UsageError("--workdir is required.")
  if not labeling_app.is_loopback(_HOST.value) and not _TOKEN.value:
    raise app.UsageError(
      f"--host={_HOST.value} is reachable from other machines: pass --token=SECRET as well "
      "(every request must then carry it), or bind 127.0.0.1."
    )
  logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
  server = labeling_app.create_app(_WORKDIR.value, token=_TOKEN.value, clips=_CLIPS.value)
  if _CLIPS.value:
    labeling_app.ClipRenderer(_WORKDIR.value, processes=_RENDER_PROCESSES.value).start()
  address = f"http://{_HOST.value}:{_PORT.value}/"
  print(
    f"labeling {_WORKDIR.value}: open {address}"
    + (f"?token={_TOKEN.value}" if _TOKEN.value else ""),
    flush=True,
  )
  server.run(host=_HOST.value, port=_PORT.value, threaded=True)


def run():
  flags.mark_flag_as_required("workdir")
  app.run(main)


if __name__ == "__main__":
  app.run(main)
