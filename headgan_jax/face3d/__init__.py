"""headgan_jax.face3d."""
