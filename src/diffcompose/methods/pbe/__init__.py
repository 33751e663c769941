"""Paint-by-Example: fill a masked region with an object that looks like a reference photo.

``options`` registers the engine (light); ``encoder`` is the exemplar encoder, ``components``
loads the model, ``sampler`` runs the guided denoising loop, ``paint`` is the engine entry,
``convert`` turns the original checkpoint into our layout.
"""
