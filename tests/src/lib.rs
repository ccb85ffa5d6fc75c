//! Helpers for the multi-process swarm tests.
