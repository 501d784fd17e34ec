"""``python -m swarm_memory [options]``: the main job, the same as ``swarm-memory demo``."""

from swarm_memory.demo import main

if __name__ == "__main__":
    main()
