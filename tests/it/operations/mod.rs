//! What operators' tools expect, each checked by the tool itself against the real binary:
//! systemd (notify socket, watchdog, the README's unit), Prometheus (`promtool` on live
//! output), OpenAPI (the served document, schemathesis), Kubernetes (the README's manifest),
//! and JSON logs.

mod kubernetes;
mod logs;
mod metrics;
mod openapi;
mod systemd;

/// The README's fenced block of `language` whose text starts with `first_line`.
pub fn readme_block(language: &str, first_line: &str) -> String {
    let readme = include_str!("../../../README.md");
    let fence = format!("```{language}\n");
    let mut rest = readme;
    while let Some(at) = rest.find(&fence) {
        let body = &rest[at + fence.len()..];
        let end = body.find("\n```").expect("an unclosed block in the README");
        let block = &body[..end + 1];
        if block.starts_with(first_line) {
            return block.to_string();
        }
        rest = &body[end..];
    }
    panic!("the README has no ```{language} block starting with {first_line:?}");
}
