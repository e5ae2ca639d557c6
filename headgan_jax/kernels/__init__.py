"""headgan_jax.kernels: CPU convolution kernels (im2col weight gradient, oneDNN handlers); imports nothing from nn."""
