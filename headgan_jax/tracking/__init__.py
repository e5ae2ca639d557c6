"""headgan_jax.tracking: video decoding and face tracking (detector, landmarks, 3DMM fit), below headgan_jax.data."""
