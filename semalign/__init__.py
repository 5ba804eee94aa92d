"""semalign: semantic alignment of unimodal medical text and vision encoders.

A helper package for a reproducible study published as a Jupyter Book. The
notebooks in ``notebooks/`` call it; the ``semalign`` command runs them.
"""

__version__ = "0.1.0"
