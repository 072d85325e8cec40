"""Shared test set-up: deterministic torch on few threads, a bounded hypothesis profile."""

import os

import torch
from hypothesis import settings

torch.set_num_threads(int(os.environ.get("TRIPLETFACE_TEST_THREADS", "2")))
settings.register_profile("default", max_examples=60, deadline=None)
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")
