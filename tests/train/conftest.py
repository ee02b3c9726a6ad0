"""Fixtures shared by the trainer tests."""

import jax
import pytest


@pytest.fixture
def compile_cache(tmp_path):
  """A persistent compilation cache, so that identical train steps compile once."""
  old = jax.config.jax_compilation_cache_dir
  jax.config.update("jax_compilation_cache_dir", str(tmp_path / "jax_cache"))
  yield
  jax.config.update("jax_compilation_cache_dir", old)
