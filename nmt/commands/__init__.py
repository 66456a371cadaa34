"""The inference commands of ``nmt``: each module has ``main(argv) -> int``."""
