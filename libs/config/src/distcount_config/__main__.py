"""`python -m distcount_config --markdown | --write README.md`: the README's settings tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from distcount_config._docs import markdown, with_tables

parser = argparse.ArgumentParser(prog="python -m distcount_config", description=__doc__)
action = parser.add_mutually_exclusive_group(required=True)
action.add_argument("--markdown", action="store_true", help="print the tables")
action.add_argument("--write", type=Path, metavar="README", help="replace the tables in README")
args = parser.parse_args()
if args.markdown:
    print(markdown(), end="")
else:
    args.write.write_text(with_tables(args.write.read_text()))
