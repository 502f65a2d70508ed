import os

# Tests run on the CPU, whatever accelerator the machine has, so results are comparable.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (after JAX_PLATFORMS is set)

# Many tests build the same programs again (a new trainer per run); a persistent
# compilation cache lets the second build load the first one's executable.
jax.config.update(
  "jax_compilation_cache_dir", os.path.join(os.path.dirname(__file__), "..", ".jax_cache")
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

from rlhf_jax import envs  # noqa: E402


def pytest_configure(config):
  # pytest restores the warning filters after collection and after each test, which drops
  # the one rlhf_jax.envs sets on import; this hands pytest the same filter.
  config.addinivalue_line("filterwarnings", f"ignore:{envs.BRAX_WARNING}:UserWarning")
