"""`python -m deeprestore` behaves like the `deeprestore` command."""

from deeprestore.cli import main

main()
