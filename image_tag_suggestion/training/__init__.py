"""Labelled data -> triplets -> trained embedding model -> exported bundle.

``datasets`` reads Open Images, a ``path,tags`` CSV or a folder per tag into one
record type; ``pipeline`` turns records into tf.data batches; ``models`` holds the
encoder, the label table and the triplet loss; ``train`` runs it all and exports a
bundle; ``evaluation`` scores any bundle on a dataset (no TensorFlow needed).
TensorFlow is imported only by ``pipeline``, ``models`` and ``train``.
"""
