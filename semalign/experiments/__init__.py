"""What the notebooks compute: stitching, zero-shot, claims and their statistics, figures."""
