"""Steps applied to a finished record, off the caller's thread (call site now; counts and prices next)."""
