"""I/O-free flows: every operation as a generator of effects (DESIGN.md decision 12).

A flow checks its input, yields effects (script calls, commands, sleeps, doorbell waits),
is sent their results, and returns the operation's result; it never touches a socket, so
the sync and async clients share every decision here and differ only in how
``_drive.py`` performs the effects (the httpx/httpcore layout). Split by concern, the way
h11 splits a protocol:

* ``effects``    the effect types, ``Flow``, ``Context`` / ``InboxContext``, ``AgentSession``
* ``args``       every argument check, ``<what>_arg``
* ``records``    one decoder per record shape in replies (named fields, bounded)
* ``replies``    each script's reply tags: outcomes, and a tag -> error table
* ``namespaces`` create / info / update / grant / revoke / clear / delete; the sweeper
* ``entries``    the write and read paths: put ... rollback, get ... key listing
* ``events``     the event feed, broadcast, audit, snapshot
* ``coord``      locks, leases and presence, heartbeats, transactions, get_or_set
* ``inbox``      per-agent inboxes

"""
