"""Image restoration: denoisers and inpainters (seeds 001 and 004), their data, corruptions and scores.

`models` is the registry of networks (`create_model`, `list_models`), `corruptions` the seeded
`image -> image` damages, `data` the step-deterministic training patches, `apply` restores images of
any size tile by tile, `evaluation` holds PSNR, SSIM and the classical methods (scikit-image's, and
BM3D when its package is installed), `report` scores a model on held-out material and writes its table
and figure into a run, and `curves` measures a model on held-out images while it trains.
"""
