"""AdvFace (Wang et al., CVPR 2023): adversarial features against reconstruction attacks.

A recognition network is split into a client part E and a server part Psi; the server stores
feature maps z = E(x). Reconstruction networks map features back to faces; AdvFace perturbs the
stored features with PGD against a shadow reconstruction network so that attackers' decoders fail,
while Psi still recognises the person.
"""
