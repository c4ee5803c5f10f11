"""`python -m distcount`, the `distcount` command by another name; the code is in distcount_cli."""
