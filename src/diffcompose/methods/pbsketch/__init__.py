"""Paint-by-Sketch (Kim et al., "Reference-based Image Composition with Sketch", CVPR-W 2023):
Paint-by-Example with a sketch that shapes the fill.

The public model is Paint-by-Example's with three more UNet input channels: the sketch (RGB,
white strokes on black, kept only inside the hole) resized to the latent grid, after
``[z_t, z_masked, keep]``. Everything else is Paint-by-Example's, and so is ours: this package
adds only the sketch. ``options`` registers the engine (light); ``sketch`` builds the sketch
channels and says when they are shown; ``components`` loads the 12-channel model through
Paint-by-Example's loader; ``engine`` feeds the channels to Paint-by-Example's sampler;
``tiny`` writes the random model of ``--model tiny``; ``convert`` reads the public
checkpoint; ``extract`` takes a training sketch from a photo, and ``config``/``train`` run
Paint-by-Example's self-reference trainer with it.
"""
