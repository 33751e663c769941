"""SmartBrush (Xie et al., CVPR 2023): text- and shape-guided object inpainting with a mask head.

No code or weights were published; this is an open implementation from the paper's text.
``options`` (light) registers the engine; ``precision`` holds the mask precision levels,
``model`` the UNet changes, ``engine`` the sampler, ``data``/``config``/``train`` the
training recipe and ``tiny`` the random model of ``--model tiny``.
"""
