"""Scoring a policy by full episodes, with Brax's own evaluator (host side, not jittable).

`true_return` in metrics.jsonl averages the episodes that happened to end in a chunk, which
leans toward short episodes; these functions run fresh full episodes instead, so that
runs (ours, Brax's, learned or true reward) are judged the same way.
"""

from brax.training import acting
from brax.training.agents.ppo import networks as brax_ppo_networks

from rlhf_jax import envs, ppo


def brax_params(ppo_state: ppo.PPOState) -> tuple:
  """Our PPO state as the (normalizer, policy, value) tuple Brax's inference takes."""
  return (ppo_state.normalizer, ppo_state.params.policy, ppo_state.params.value)


def evaluate(config, networks, params: tuple, key, num_envs: int = 128) -> float:
  """Mean true return of `num_envs` full episodes of the (stochastic) policy."""
  env = envs.make_env(
    config.env.name,
    config.env.backend,
    episode_length=config.env.episode_length,
    action_repeat=config.env.action_repeat,
  )
  evaluator = acting.Evaluator(
    env,
    brax_ppo_networks.make_inference_fn(networks),
    num_eval_envs=num_envs,
    episode_length=config.env.episode_length,
    action_repeat=config.env.action_repeat,
    key=key,
  )
  return float(evaluator.run_evaluation(params, training_metrics={})["eval/episode_reward"])
