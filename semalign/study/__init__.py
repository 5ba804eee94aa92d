"""Running the study: the runner, the command line, caches, paths, results and the book."""
