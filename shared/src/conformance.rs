//! The store conformance suite (filled in next).
