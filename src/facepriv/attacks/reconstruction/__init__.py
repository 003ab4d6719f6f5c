"""Reconstruction attack (Osorio-Roig et al., WIFS 2023; decoder of Shahreza et al., ICIP 2022).

Modules: :mod:`.attack` (the registered ``reconstruction`` attack: every parameter and default),
:mod:`.decoder` (the up-sampling CNN, 112 or 64 px), :mod:`.losses` (MSE + SSIM + ID loss),
:mod:`.data` (templates paired with aligned crops), :mod:`.runfolder` (run folders: config,
state, lock), :mod:`.trainer` (bit-exact resumable training), :mod:`.runs` (in-memory train /
evaluate entry points and their file-level readers), :mod:`.evaluate` (RSR, SRRA, SSIM/PSNR/MSE,
transfer), :mod:`.gender` (gender from reconstructions), :mod:`.kp_grid` (K x P grid for PE-MIU),
:mod:`.figure` and :mod:`.viz` (pictures). Nothing heavy is imported here, so
``import facepriv.attacks`` stays cheap.
"""
