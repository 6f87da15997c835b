//! Conformance cases (see conformance/).
