"""headgan_jax.nn."""
