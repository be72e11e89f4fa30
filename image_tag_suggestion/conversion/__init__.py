"""Build-time tools: turn third-party weights and WordNet into a model bundle.

Nothing here runs while serving; these modules need the ``[build]`` extra
(TensorFlow) and, for the vocabulary, Debian's WordNet files.
"""
