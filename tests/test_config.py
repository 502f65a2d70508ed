"""Bad config values fail fast, before anything is built, with a message saying what to change."""

import importlib.util
import json
import os

import pytest

from rlhf_jax import config as config_lib
from rlhf_jax.lm import config as lm_config


def _config(**overrides):
  config = config_lib.default_config()
  for dotted, value in overrides.items():
    *parents, leaf = dotted.split("__")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"env__name": "hoper"}, "Unknown environment 'hoper'; choose one of: ant"),
    ({"env__backend": "warp"}, "Unknown backend 'warp'; choose one of: generalized"),
    ({"ppo__num_envs": 0}, r"config.ppo.num_envs must be a positive integer, got 0"),
    ({"ppo__batch_size": -4}, r"config.ppo.batch_size must be a positive integer, got -4"),
    ({"ppo__unroll_length": 0}, r"config.ppo.unroll_length must be a positive integer"),
    ({"ppo__num_minibatches": 0}, r"config.ppo.num_minibatches must be a positive"),
    ({"ppo__num_updates_per_batch": 0}, r"config.ppo.num_updates_per_batch must be"),
    ({"env__episode_length": 0}, r"config.env.episode_length must be a positive integer"),
    ({"env__action_repeat": 0}, r"config.env.action_repeat must be a positive integer"),
    ({"total_env_steps": 0}, r"config.total_env_steps must be a positive integer"),
    ({"iterations_per_chunk": 0}, r"config.iterations_per_chunk must be a positive"),
    (
      {"ppo__num_envs": 96, "ppo__batch_size": 100, "ppo__num_minibatches": 4},
      r"\(100 \* 4 = 400\) must be a multiple of config.ppo.num_envs \(96\)",
    ),
    ({"ppo__learning_rate": 0.0}, r"config.ppo.learning_rate must be > 0"),
    ({"ppo__discounting": 1.5}, r"config.ppo.discounting must be in \(0, 1\]"),
    ({"ppo__entropy_cost": -0.1}, r"config.ppo.entropy_cost must be >= 0"),
    ({"ppo__value_hidden_sizes": (64, 0)}, r"value_hidden_sizes must be a non-empty list"),
    ({"reward__source": "oracle"}, r"config.reward.source='oracle' is unknown; choose"),
    ({"checkpoint__every_chunks": 0}, r"config.checkpoint.every_chunks must be a positive"),
    ({"checkpoint__keep": 0}, r"config.checkpoint.keep must be a positive integer, got 0"),
    ({"learner": "dqn"}, r"config.learner='dqn' is unknown; choose one of \('ppo', 'sac'\)"),
    ({"learner": "sac", "sac__batch_size": 0}, r"config.sac.batch_size must be a positive"),
    (
      {
        "reward__source": "learned",
        "queries__method": "kcenter_entropy",
        "queries__oversampling": 1,
      },
      r"config.queries.oversampling \(1\) must be at least 2",
    ),
    ({"learner": "sac", "sac__tau": 1.5}, r"config.sac.tau \(1.5\) must be in \(0, 1\]"),
    (
      {"learner": "sac", "sac__min_replay_size": 10**7},
      r"config.sac.min_replay_size \(10000000\) must be in \[0, config.sac.max_replay_size",
    ),
    (
      {"learner": "sac", "sac__max_replay_size": 100, "sac__min_replay_size": 0},
      r"config.sac.max_replay_size \(100\) must hold one iteration's 128 transitions",
    ),
    ({"learner": "sac", "sac__num_envs": 0}, r"config.sac.num_envs must be a positive"),
    (
      {"env__terminate_when_unhealthy": False},
      r"terminate_when_unhealthy=False is for envs whose episodes end when the body falls "
      r"\(hopper, walker2d, ant, humanoid\); 'inverted_pendulum' has no such ending",
    ),
  ],
)
def test_bad_values_raise_clear_errors(overrides, message):
  with pytest.raises(ValueError, match=message):
    config_lib.validate(_config(**overrides))


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"reward__ensemble_size": 0}, r"config.reward.ensemble_size must be a positive integer"),
    ({"reward__batch_size": -1}, r"config.reward.batch_size must be a positive integer"),
    ({"reward__hidden_sizes": (64, -1)}, r"config.reward.hidden_sizes must be positive"),
    ({"reward__inputs": "pixels"}, r"config.reward.inputs='pixels' is unknown; choose one of"),
    ({"reward__label_noise": 1.0}, r"config.reward.label_noise must be in \[0.0, 1.0\)"),
    ({"reward__initial_train_steps": -1}, r"initial_train_steps must be an integer >= 0"),
    ({"segments__length": 1001}, r"config.segments.length \(1001\) must be at most the episode"),
    ({"segments__per_iteration": 4096}, r"per_iteration \(4096\) must be at most config.segm"),
    ({"queries__method": "random"}, r"config.queries.method='random' is unknown; choose one of"),
    ({"queries__schedule": "linear"}, r"config.queries.schedule='linear' is unknown"),
    ({"queries__total_labels": 0}, r"config.queries.total_labels must be a positive integer"),
    ({"queries__total_labels": 2}, r"must give at least one initial label"),
    ({"queries__initial_fraction": 1.5}, r"initial_fraction must be in \[0, 1\]"),
    ({"teacher": "human2"}, r"config.teacher='human2' is unknown; choose one of oracle"),
    ({"teacher_params__beta": 0.0}, r"config.teacher_params.beta must be > 0"),
    ({"teacher_params__gamma": 1.2}, r"config.teacher_params.gamma must be in \(0, 1\]"),
    ({"teacher_params__eps_mistake": -0.1}, r"teacher_params.eps_mistake must be in \[0, 1\]"),
    ({"teacher": "human", "num_seeds": 2}, r"teacher='human' labels one run: set config.num_"),
    ({"teacher": "human", "human__grace_seconds": -1.0}, r"human.grace_seconds must be >= 0"),
  ],
)
def test_bad_preference_values_raise_clear_errors(overrides, message):
  config = _config(**overrides)
  config_lib.validate(config.copy_and_resolve_references())  # ignored under the true reward
  config.reward.source = "learned"
  with pytest.raises(ValueError, match=message):
    config_lib.validate(config)


def test_learned_default_config_is_valid():
  config_lib.validate(_config(reward__source="learned"))


def test_num_envs_must_divide_over_devices():
  config = _config(**{"ppo__num_envs": 6, "ppo__batch_size": 6, "ppo__num_minibatches": 2})
  with pytest.raises(ValueError, match=r"num_envs \(6\) must be a multiple of the device count"):
    config_lib.validate(config, device_count=4)


def test_sac_batches_must_divide_over_devices():
  config = _config(learner="sac", sac__num_envs=8, sac__batch_size=250)
  with pytest.raises(ValueError, match=r"sac.batch_size \(250\) must be a multiple of the device"):
    config_lib.validate(config, device_count=4)
  config.sac.batch_size = 256
  config_lib.validate(config, device_count=4)


def test_default_config_is_valid():
  config_lib.validate(config_lib.default_config())


def test_errors_come_before_compilation(monkeypatch):
  """make_trainer validates first: a bad value never reaches env creation."""
  from rlhf_jax import envs, loop

  def fail(*args, **kwargs):
    raise AssertionError("make_env called before validation")

  monkeypatch.setattr(envs, "make_env", fail)
  with pytest.raises(ValueError, match="num_envs"):
    loop.make_trainer(_config(**{"ppo__num_envs": 0}))


CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(CONFIGS) if f.endswith(".py")))
def test_every_config_file_is_valid(name):
  """configs/lm_*.py are language-model configs, checked by rlhf_jax.lm.config."""
  config = config_lib.load(os.path.join(CONFIGS, name))
  (lm_config.validate if name.startswith("lm_") else config_lib.validate)(config)


def test_lm_rlhf_config_takes_the_sharding_preset_after_a_colon():
  """`--config=configs/lm_rlhf.py:tensor_parallel`: ml_collections passes the text after
  the colon to get_config; the section is the preset's (tensor parallel does not gather
  weights and splits batches over data only; fsdp gathers, over data and model)."""
  spec = importlib.util.spec_from_file_location("lm_rlhf", os.path.join(CONFIGS, "lm_rlhf.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  tensor_parallel, fsdp = module.get_config("tensor_parallel"), module.get_config()
  assert (tensor_parallel.sharding.gather_params, fsdp.sharding.gather_params) == (False, True)
  assert tensor_parallel.sharding.batch_axes == ("data",)
  assert fsdp.sharding.batch_axes == ("data", "model")
  lm_config.validate(tensor_parallel)
  with pytest.raises(ValueError, match="preset"):
    module.get_config("pipeline")


def test_load_json_fills_keys_an_older_run_lacks(tmp_path):
  """A run's config.json from before a key existed loads with the key's default; what the
  file holds wins, lists come back as tuples."""
  written = config_lib.default_config().to_dict()
  del written["ppo"]["torso"]  # as an older run's file would be
  written["ppo"]["num_envs"] = 7
  written["ppo"]["policy_hidden_sizes"] = [5, 6]
  written["extra"] = {"kept": 1}
  path = tmp_path / "config.json"
  path.write_text(json.dumps(written))
  config = config_lib.load_json(str(path))
  assert config.ppo.torso == "minatar"
  assert config.ppo.num_envs == 7 and config.ppo.policy_hidden_sizes == (5, 6)
  assert config.extra.kept == 1 and config.sac.batch_size == 256
