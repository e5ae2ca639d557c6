"""headgan_jax.metrics: the paper's evaluation metrics (CSIM, FID, FVD, AED) and more, as evaluators by name.

Modules: stats (Frechet distance, streaming statistics), fid + inception (FID), fvd + i3d (FVD), csim + face +
arcface (identity similarity), image (L1 / PSNR / SSIM), aed (AED / APD), evaluators (config.evals registry),
protocols (self / cross reenactment), report (Table 1 printer, eval.json writer).
"""
