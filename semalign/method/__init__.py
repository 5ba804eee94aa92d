"""The paper's mathematics, without I/O: transforms between spaces, similarity of spaces, ASIF."""
