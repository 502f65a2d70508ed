import os
import warnings

# Tests run on the CPU, whatever accelerator the machine has, so results are comparable.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
warnings.filterwarnings("ignore", message="Brax System, piplines and environments")
