"""Model plumbing shared by every diffusion engine: device choice, locating weights, loading."""
