"""headgan_jax.audio."""
