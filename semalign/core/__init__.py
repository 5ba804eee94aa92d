"""The ground floor: errors, paths, caches and progress bars. It imports nothing
else of the package, and everything else may import it."""
