"""rlhf_jax: deep RL from human preferences, with the whole loop on the accelerator."""

from setuptools import find_packages, setup

setup(
  name="rlhf_jax",
  version="0.1.0",
  description="Reinforcement learning from human preferences in JAX and Brax",
  long_description=open("README.md", encoding="utf-8").read(),
  long_description_content_type="text/markdown",
  python_requires=">=3.11",
  packages=find_packages(include=["rlhf_jax", "rlhf_jax.*"]),
  package_data={"rlhf_jax.labeling": ["templates/*.html"]},
  # CPU JAX by default; see the README for the GPU/TPU builds.
  install_requires=[
    "jax>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "brax>=0.14.2,<0.15",
    "mujoco>=3.3,<5",
    "pgx>=2.6,<3",  # MinAtar games (rlhf_jax/minatar.py); 2.6 ships them, no pgx-minatar
    "ml-collections>=1.1,<2",
    "absl-py>=2.1,<3",
    "tensorboardX>=2.6,<3",
    "matplotlib>=3.10,<4",
    "numpy>=2.0,<3",
    "safetensors>=0.4,<1",  # GPT-2 checkpoints (rlhf_jax/lm/weights.py), read with NumPy
    "regex>=2024.4.16,<2028",  # Unicode classes in GPT-2's pre-tokenizer (rlhf_jax/lm/tokenizer.py)
    # Labeling by a person (rlhf_jax/labeling): the app, clip encoding, datasets.
    "flask>=3.0,<4",
    "imageio-ffmpeg>=0.5,<0.7",
    "tensorflow-datasets>=4.9.10,<5",
    "array-record>=0.5,<0.9",
    "importlib_resources>=6,<7",  # etils.epath needs it for tensorflow-datasets
  ],
  extras_require={
    "test": [
      "pytest>=8,<10",
      "nbclient>=0.10,<0.12",
      "nbformat>=5.10,<6",
      "ipykernel>=6.29,<8",
      "playwright>=1.40,<2",  # drives Debian's chromium (no browser download)
    ],
    "dev": ["ruff>=0.8,<1"],
  },
  entry_points={
    "console_scripts": ["rlhf-jax-train=rlhf_jax.train:run", "rlhf-jax-label=rlhf_jax.label:run"]
  },
)
