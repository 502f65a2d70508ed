"""Scoring a policy by full episodes, with Brax's own evaluator (host side, not jittable).

`true_return` in metrics.jsonl averages the episodes that happened to end in a chunk, which
leans toward short episodes; these functions run fresh full episodes instead, so that
runs (ours, Brax's, learned or true reward) are judged the same way.
"""

from brax.training import acting
from brax.training.agents.ppo import networks as brax_ppo_networks

from rlhf_jax import envs


def evaluate_agent(config, learner, agent, key, num_envs: int = 128) -> float:
  """`evaluate` of a learner's state (a trainer's `learner`, a TrainState's `agent`)."""
  params = learner.brax_params(agent)
  return evaluate(config, learner.networks, params, key, num_envs, learner.make_inference_fn)


def evaluate(
  config,
  networks,
  params: tuple,
  key,
  num_envs: int = 128,
  make_inference_fn=brax_ppo_networks.make_inference_fn,
) -> float:
  """Mean true return of `num_envs` full episodes of the (stochastic) policy: Brax's
  `networks` with `params` as its `make_inference_fn` takes them (default: PPO's). The
  standard task: episodes end where the env ends them, whatever
  `config.env.terminate_when_unhealthy` trained with."""
  env = envs.make_env(
    config.env.name,
    config.env.backend,
    episode_length=config.env.episode_length,
    action_repeat=config.env.action_repeat,
  )
  evaluator = acting.Evaluator(
    env,
    make_inference_fn(networks),
    num_eval_envs=num_envs,
    episode_length=config.env.episode_length,
    action_repeat=config.env.action_repeat,
    key=key,
  )
  return float(evaluator.run_evaluation(params, training_metrics={})["eval/episode_reward"])
