"""Reconstruction attack (Osorio-Roig et al., WIFS 2023; decoder of Shahreza et al., ICIP 2022).

Modules: :mod:`.decoder` (the up-sampling CNN, 112 or 64 px), :mod:`.losses` (MSE + SSIM + ID
loss), :mod:`.data` (embeddings paired with aligned crops, identity-disjoint split),
:mod:`.trainer` (resumable training, checkpoints), :mod:`.evaluate` (RSR, SRRA, SSIM/PSNR/MSE,
transfer), :mod:`.gender` (gender from reconstructions), :mod:`.runs` (file-level train/eval used
by the CLI), :mod:`.kp_grid` (K x P grid for PE-MIU), :mod:`.viz` (grids, heat-maps).
Nothing heavy is imported here, so ``import facepriv.attacks`` stays cheap.
"""
