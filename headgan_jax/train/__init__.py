"""headgan_jax.train."""
