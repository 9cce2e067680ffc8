"""Observation: the host store, counting, events, host filters, the gap watch and the loop's memory."""
