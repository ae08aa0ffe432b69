"""`python -m crib` is the `crib` command."""

from crib.cli.main import main

main()
