"""`python -m bench ...` (and `accelerate launch -m bench llm train ...`) is the `bench` command."""

from bench.cli import main

main()
