//! The OpenAPI document: served equal to the repository copy, and schemathesis against a live compute.
