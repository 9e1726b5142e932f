"""`python -m app.cli ...`: the `consent-api` command."""

from app.cli import main

main()
