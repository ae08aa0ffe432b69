"""One module per group of `crib` subcommands."""
