"""The only layer that talks to the Kubernetes API: server-side apply, listing owned objects,
deleting stale ones, status writes, Events and the leader-election Lease."""
