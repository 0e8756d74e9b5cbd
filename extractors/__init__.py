"""Feature extractors: a registry of specs and builders for C3D, VGGish, ViT, AST and generic transformers models."""
