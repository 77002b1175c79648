"""Shared fixtures. Tests under tests/e2e start real services; tests elsewhere are fast units."""

from __future__ import annotations

import os

# Never reach a model hub from tests: the teacher comes from the installed package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
