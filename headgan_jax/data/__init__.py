"""headgan_jax.data."""
