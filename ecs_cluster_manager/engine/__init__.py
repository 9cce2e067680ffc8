"""The engine: discovery, the pass, coverage reading and the audit `check` prints. Never imports ops."""
