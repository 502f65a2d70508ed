"""rlhf_jax: deep reinforcement learning from human preferences in JAX and Brax."""

__version__ = "0.1.0"
