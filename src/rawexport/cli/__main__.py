"""`python -m rawexport.cli`."""

from rawexport.cli.main import main

main()
