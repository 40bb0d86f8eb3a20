"""`python -m pyservice --port-file FILE`: serve on a free loopback port, written to FILE once listening."""

import argparse
from pathlib import Path

from pyservice.server import serve

parser = argparse.ArgumentParser(prog="pyservice")
parser.add_argument("--port-file", required=True, type=Path)
serve(parser.parse_args().port_file)
