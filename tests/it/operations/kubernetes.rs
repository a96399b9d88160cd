//! The README's Kubernetes manifest, validated offline against Kubernetes's own schemas
//! (`kubernetes-validate --strict`: unknown fields are errors too).

#[test]
fn the_readme_manifest_is_valid_kubernetes() {
    let manifest = crate::operations::readme_block("yaml", "apiVersion: v1\nkind: ConfigMap");
    // What the README promises of it.
    for needle in [
        "kind: StatefulSet",
        "path: /healthz",
        "path: /readyz",
        "terminationGracePeriodSeconds: 90",
        "configMap:",
        "secretName: compute-c1-auth",
        "--auth-public-key",
        "limits:",
    ] {
        assert!(manifest.contains(needle), "the manifest lacks {needle}");
    }
    // The spec in the ConfigMap is one compute_ctl accepts.
    let spec_start = manifest.find("current.json: |\n").unwrap() + "current.json: |\n".len();
    let spec_end = manifest[spec_start..].find("---").unwrap() + spec_start;
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("current.json");
    std::fs::write(&spec, &manifest[spec_start..spec_end]).unwrap();
    let check = std::process::Command::new(crate::support::compute::binary())
        .args(["spec", "check"])
        .arg(&spec)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let path = dir.path().join("compute.yaml");
    std::fs::write(&path, &manifest).unwrap();
    let validate = crate::support::tools::tool("kubernetes-validate", "kubernetes-validate (PyPI)");
    let output = std::process::Command::new(validate)
        .args(["--strict", "--kubernetes-version", "1.30.0"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // One pass per document: ConfigMap, Secret, StatefulSet.
    let said = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(said.matches("passed for resource").count(), 3, "{said}");
}
