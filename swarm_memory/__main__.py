"""``python -m swarm_memory [options]``: the main job, the same as ``swarm-memory demo``."""

import sys

from swarm_memory.cli import main

if __name__ == "__main__":
    main(["demo", *sys.argv[1:]])
