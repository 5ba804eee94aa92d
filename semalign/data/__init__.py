"""Report collections, paper datasets, image loading and the data manifest."""
