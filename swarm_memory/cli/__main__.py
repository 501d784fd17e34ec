"""``python -m swarm_memory.cli [options] COMMAND``: the ``swarm-memory`` console script."""

from swarm_memory.cli import main

if __name__ == "__main__":
    main()
