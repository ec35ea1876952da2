"""The scenario language: simulated threads running step programs."""
