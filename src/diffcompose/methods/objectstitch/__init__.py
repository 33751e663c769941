"""ObjectStitch (Song et al., CVPR 2023) as bcmi's public implementation computes it.

An object photo is put into a box of a background: the content adaptor maps every CLIP
ViT-L/14 token of the object (257 at 224 px, black outside its mask) into the UNet's
768-d cross-attention space, and a 9-channel inpainting LDM fills the box. MureObjectStitch's
few-shot fine-tuning (``train objectstitch --few-shot DIR``) tunes the UNet on a few photos
of one object. The sampler is Paint-by-Example's (:mod:`diffcompose.methods.pbe`), whose
exemplar encoder reads every token here (``token_mode: patches``).
"""
