"""Build or update a searchable image index: `python index_builder.py --help` (the code is search/cli.py)."""
import sys

from search.cli import main

if __name__ == "__main__":
    sys.exit(main())
