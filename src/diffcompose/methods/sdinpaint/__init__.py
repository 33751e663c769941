"""Text-guided inpainting with Stable Diffusion's 9-channel inpainting models (works with public weights)."""
