"""Multi-store sync: change log, wire protocol, worker and central node."""
