//! The dependency rule, checked on the source: domain code knows no HTTP and no SQL.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn domain_modules_import_neither_axum_nor_sqlx() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    for module in [
        "registry", "ingest", "crypto", "partners", "auth", "dci", "consent",
    ] {
        let mut files = Vec::new();
        rust_files(&root.join(module), &mut files);
        assert!(!files.is_empty(), "src/{module} has no files");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (number, line) in text.lines().enumerate() {
                if ["axum", "sqlx", "crate::http"]
                    .iter()
                    .any(|m| line.contains(&format!("{m}::")) || line.contains(&format!("use {m}")))
                {
                    offenders.push(format!("{}:{}: {line}", file.display(), number + 1));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "domain code reaches into HTTP or SQL:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn consent_decides_without_wire_types() {
    // The decision and the log are domain code: the DCI mapping (dci) applies a policy to
    // wire objects, never the other way round.
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/consent"),
        &mut files,
    );
    assert!(!files.is_empty());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("crate::dci"), "{}", file.display());
    }
}

#[test]
fn only_the_clock_reads_the_system_time() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| !f.ends_with("clock.rs"))
        .filter(|f| std::fs::read_to_string(f).unwrap().contains("Utc::now"))
        .map(|f| f.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "{offenders:?}");
}
