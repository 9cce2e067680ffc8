"""The model: plain dataclasses and pure decisions. No I/O, no clock reads, no logging; imports nothing above it."""
