//! The axum edge (see ARCHITECTURE.md). Filled by the edge issue.
