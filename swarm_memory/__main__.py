from swarm_memory.quickstart import main

raise SystemExit(main())
