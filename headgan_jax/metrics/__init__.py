"""headgan_jax.metrics."""
