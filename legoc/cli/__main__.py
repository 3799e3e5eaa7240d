"""`python -m legoc.cli`: the same entry as the `legoc` console script."""

from legoc.cli.main import main

main()
