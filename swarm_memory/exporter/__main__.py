"""``python -m swarm_memory.exporter [--url --port --addr --prefix --cluster]``: the CLI's
``swarm-memory exporter`` command (same flags, help, errors and exit codes), as deploy/
runs it. It needs the ``[cli]`` extra; the collector (``swarm_memory.exporter``) does not.
"""

import sys

from swarm_memory.cli import main

if __name__ == "__main__":
    main(["exporter", *sys.argv[1:]])
