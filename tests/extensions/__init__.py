"""Toy extensions, one file each, as docs/architecture.md's recipes describe them."""
