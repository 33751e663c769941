"""Classical engines: OpenCV and scikit-image, no weights, any CPU. The baselines."""
