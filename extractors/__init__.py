"""Feature extractors: a registry of specs and builders for C3D, VGGish, ViT, AST and generic transformers models.

Use ``extractors.registry.build_extractor(name, weights=PATH_OR_"random", device=..., mode=...)`` and
``extractors.runner.extract_videos(jobs, extractors)``; ``avzsl extractors list`` prints every spec.

Modes (docs/reference-defects.md): ``benchmark`` reproduces how the published AV-GZSL features were made (C3D: 25 fps,
16-frame clips with a zero-padded tail, BGR and the colour wrap-inversion; VGGish: post-ReLU, PCA, uint8);
``clean`` does the correct thing (RGB, no inversion, float features). Weights only ever come from local
files (docs/extractors.md); ``weights="random"`` is explicit and marked in every spec, record and printout.

Adding a model is one module: define a default-spec function ``(mode) -> ExtractorSpec``, an
:class:`extractors.base.Extractor` subclass (windowing, ``prepare`` on the device, ``forward``) and a builder
decorated with ``@register(name, default_spec)``; then list the module in ``registry._MODULES``.
"""
