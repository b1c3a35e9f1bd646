//! Test support: start the real server, talk Yjs to it (placeholder).
