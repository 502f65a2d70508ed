"""What PPO and SAC share: Brax's tanh-normal policy network over (optionally) normalized
observations, and sampling from it."""

from brax.training.acme import running_statistics


def observation_preprocessor(normalize: bool):
  """The `preprocess_observations_fn` of Brax's networks: the running statistics'
  standardization, or the identity."""
  return running_statistics.normalize if normalize else lambda obs, unused_normalizer: obs


def sample_actions(networks, normalizer, policy_params, obs, key):
  """Samples from the policy of Brax's PPO or SAC networks. Returns (action, raw_action,
  log_prob), batch-shaped."""
  dist = networks.parametric_action_distribution
  logits = networks.policy_network.apply(normalizer, policy_params, obs)
  raw_action = dist.sample_no_postprocessing(logits, key)
  return dist.postprocess(raw_action), raw_action, dist.log_prob(logits, raw_action)
