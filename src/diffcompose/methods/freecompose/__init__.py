"""FreeCompose (ECCV 2024): training-free removal, harmonization and composition by DDS latent optimisation."""
