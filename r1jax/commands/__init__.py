"""``r1jax`` subcommands, each a module with ``main(argv) -> int``."""
