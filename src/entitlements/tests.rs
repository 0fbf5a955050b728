//! Property tests of the check against a recomputation from the events.
