#!/usr/bin/env python3
"""Benchmark webrtc_app against the PeerJS server (docs/benchmarks.md): ``python bench/run.py --help``.

The program is the ``bench`` package beside this file; bench/__init__.py lists its modules.
"""

import os
import sys

if __name__ == "__main__":
    # Run as a script, Python puts bench/ itself first on sys.path, where the package's module
    # names (config, docs, ...) would hide others of the same name; the project folder instead.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    from bench.cli import main

    sys.exit(main())
