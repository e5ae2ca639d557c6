"""headgan-jax: one-shot talking-head reenactment driven by a 3D face and audio (HeadGAN), in JAX/Flax."""
__version__ = '0.1.0'
