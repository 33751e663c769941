"""BrushNet (Ju et al., ECCV 2024): text-guided inpainting with a trainable branch beside a frozen SD-1.5 UNet.

``model`` holds the branch and the base UNet run with its residuals (also used by PowerPaint v2,
whose ``BrushNet_CA`` is the same branch with cross-attention), ``tiny`` the random models of
``--model tiny`` and the tests.
"""
