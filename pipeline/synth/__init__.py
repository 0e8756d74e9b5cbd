"""Synthetic media for tests, benchmarks and the demo: encoded clips, a fault corpus, a zero-shot dataset.

Import the modules directly: ``media`` (write_av_clip, make_test_clip), ``faults`` (make_fault_corpus),
``classes`` (compositional class design), ``render`` (frames and audio of one clip), ``dataset``
(SynthConfig, generate_dataset).
"""
