"""Paint-by-Example: fill a masked region with an object that looks like a reference photo.

``options`` registers the engine (light); ``encoder`` is the exemplar encoder, ``components``
loads the model and builds the UNet input, ``reference`` prepares the reference photo,
``engine`` runs the guided sampling, ``convert`` turns the original checkpoint into our layout
and ``tiny`` writes the random model of ``--model tiny``. Self-reference training:
``config`` (the YAML config, light), ``data`` (the dataset, with ``masks`` for the hole shapes
and ``augment`` for the reference's distortions), ``train_model`` (the trainable model built
from an initial checkpoint) and ``train`` (the loss and the export, on the shared loop).
"""
