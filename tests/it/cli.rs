//! The real `nsr` binary, run as a user would, on an embedded SQLite file in a temporary folder.

use crate::support::specs_dir;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Nsr {
    dir: tempfile::TempDir,
    registers: PathBuf,
}

impl Nsr {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            registers: specs_dir(),
        }
    }

    fn db_file(&self) -> PathBuf {
        self.dir.path().join("data/nsr.sqlite3")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nsr"));
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("NSR_")) {
            command.env_remove(key);
        }
        command
            .args(args)
            .current_dir(self.dir.path())
            .env(
                "NSR_DATABASE_URL",
                format!("sqlite://{}", self.db_file().display()),
            )
            .env("NSR_REGISTERS_DIR", &self.registers)
            .env("NSR_MAPPINGS_DIR", crate::support::mappings_dir())
            .env("NSR_LOG_FILTER", "warn");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and expects success; returns standard output.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "nsr {args:?} failed: {}\n{}",
            text(&output.stderr),
            text(&output.stdout)
        );
        text(&output.stdout)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn show_prints_a_sample_individual_with_household_members_and_supporting_rows() {
    let nsr = Nsr::new();
    assert!(nsr.ok(&["seed", "--sample"]).contains("created"));
    let shown = nsr.ok(&["show", "IND-NSR-0001"]);
    for expected in [
        "IND-NSR-0001 (individual, version 1, ACTIVE",
        "foundational_id: FID-00000001",
        "Household:",
        "HH-NSR-0001 (household",
        "Members (3):",
        "IND-NSR-0002",
        "Supporting rows (",
    ] {
        assert!(
            shown.contains(expected),
            "`{expected}` missing from:\n{shown}"
        );
    }
    assert!(shown.contains("CNS-"), "no consent row in:\n{shown}");
    let json: serde_json::Value =
        serde_json::from_str(&nsr.ok(&["show", "IND-NSR-0001", "--json"])).unwrap();
    assert_eq!(json["household"]["functional_id"], "HH-NSR-0001");
    assert_eq!(json["members"].as_array().unwrap().len(), 3);
    let missing = nsr.run(&["show", "IND-NOBODY"]);
    assert_eq!(missing.status.code(), Some(4));
}

#[test]
fn a_duplicate_foundational_id_and_a_bad_enum_value_are_refused_with_the_field_named() {
    let nsr = Nsr::new();
    nsr.ok(&["seed", "--sample"]);
    let file = nsr.write(
        "people.csv",
        "id,parent_id,foundational_id,gender\nIND-NEW1,HH-NSR-0001,FID-00000001,MALE\nIND-NEW2,HH-NSR-0001,FID-NEW-2,M\nIND-NEW3,HH-NSR-0001,FID-NEW-3,FEMALE\n",
    );
    let output = nsr.run(&["import", "csv", "--register", "individual", path_str(&file)]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("1 created") && text(&output.stdout).contains("2 rejected"),
        "{}",
        text(&output.stdout)
    );
    let errors = std::fs::read_to_string(nsr.dir.path().join("people.csv.errors.csv")).unwrap();
    assert!(
        errors.contains(
            "2,IND-NEW1,foundational_id,unique,the value is already held by `IND-NSR-0001`"
        ),
        "{errors}"
    );
    assert!(
        errors.contains(
            "3,IND-NEW2,gender,not_in_enum,\"`M` is not one of MALE, FEMALE, OTHERS, UNKNOWN\""
        ),
        "{errors}"
    );

    let output = nsr.run(&["update", "IND-NSR-0002", "foundational_id=FID-00000001"]);
    assert_eq!(output.status.code(), Some(3));
    assert!(
        text(&output.stdout).contains("refused: foundational_id:"),
        "{}",
        text(&output.stdout)
    );
    let output = nsr.run(&["update", "IND-NSR-0002", "gender=WOMAN"]);
    assert!(
        text(&output.stdout).contains("refused: gender: `WOMAN` is not one of"),
        "{}",
        text(&output.stdout)
    );
}

#[test]
fn after_an_update_show_as_of_before_prints_the_old_value_and_history_lists_both_versions() {
    let nsr = Nsr::new();
    nsr.ok(&["seed", "--sample"]);
    let before = nsr::clock::to_text(nsr::clock::Clock::now(&nsr::clock::SystemClock));
    let old = nsr.ok(&["show", "IND-NSR-0001"]);
    assert!(old.contains("occupation: Wage Labourer"), "{old}");
    assert!(
        nsr.ok(&[
            "update",
            "IND-NSR-0001",
            "occupation=Carpenter",
            "--reason",
            "field visit",
            "--actor",
            "officer-7"
        ])
        .contains("version 2 written")
    );

    assert!(
        nsr.ok(&["show", "IND-NSR-0001"])
            .contains("occupation: Carpenter")
    );
    let then = nsr.ok(&["show", "IND-NSR-0001", "--as-of", &before]);
    assert!(
        then.contains("occupation: Wage Labourer") && then.contains("version 1"),
        "{then}"
    );

    let history = nsr.ok(&["history", "IND-NSR-0001"]);
    assert!(
        history.contains("version 1 ") && history.contains("version 2 "),
        "{history}"
    );
    assert!(
        history.contains("occupation: Wage Labourer -> Carpenter  (by officer-7"),
        "{history}"
    );
}

#[test]
fn flipping_one_byte_of_an_audit_entry_in_the_sqlite_file_is_detected_and_named() {
    let nsr = Nsr::new();
    nsr.ok(&["seed", "--sample"]);
    nsr.ok(&["update", "IND-NSR-0003", "occupation=Teacher"]);
    assert!(
        nsr.ok(&["audit", "verify"])
            .contains("audit chain intact: 2 entries")
    );

    // Fold the WAL into the main file, then edit one byte of entry 1 in the file itself.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use sqlx::Connection;
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}", nsr.db_file().display()))
                .await
                .unwrap();
        sqlx::query("pragma wal_checkpoint(truncate)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    });
    let mut bytes = std::fs::read(nsr.db_file()).unwrap();
    let needle = br#""source":"sample""#;
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("entry 1 is in the file");
    bytes[at + needle.len() - 2] = b'E'; // "sample" -> "samplE"
    std::fs::write(nsr.db_file(), bytes).unwrap();

    let output = nsr.run(&["audit", "verify"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stdout).contains("audit entry 1 was edited"),
        "{}",
        text(&output.stdout)
    );
}

#[test]
fn unknown_configuration_keys_are_refused_with_the_key_named() {
    let nsr = Nsr::new();
    let output = nsr
        .command(&["registers"])
        .env("NSR_DATABSE_URL", "x")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("NSR_DATABSE_URL"),
        "{}",
        text(&output.stderr)
    );

    let config = nsr.write(
        "custom.toml",
        "listen = \"127.0.0.1:9\"\nimport_batch = 5\n",
    );
    let output = nsr.run(&["--config", path_str(&config), "registers"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("unknown key `import_batch`"),
        "{}",
        text(&output.stderr)
    );
    assert!(
        nsr.ok(&["config-example"])
            .contains("import_batch_size = 5000")
    );
}

fn copy_specs(nsr: &mut Nsr) -> PathBuf {
    let dir = nsr.dir.path().join("registers");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(specs_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    nsr.registers = dir.clone();
    dir
}

#[test]
fn a_broken_register_definition_stops_nsr_naming_the_file_and_field() {
    let mut nsr = Nsr::new();
    let dir = copy_specs(&mut nsr);
    let path = dir.join("individual.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    let broken = yaml.replacen(
        "values: [MALE, FEMALE, OTHERS, UNKNOWN]",
        "valuez: [MALE, FEMALE]",
        1,
    );
    assert_ne!(broken, yaml);
    std::fs::write(&path, broken).unwrap();
    let output = nsr.run(&["seed", "--sample"]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("individual.yaml")
            && stderr.contains("field `gender`")
            && stderr.contains("valuez"),
        "{stderr}"
    );
}

#[test]
fn adding_a_field_is_a_yaml_edit_and_a_restart() {
    let mut nsr = Nsr::new();
    let dir = copy_specs(&mut nsr);
    nsr.ok(&["seed", "--sample"]);
    let mut household = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("household.yaml"))
        .unwrap();
    writeln!(household, "  solar_panel_count:\n    type: integer\n    description: Solar panels on the dwelling\n    min: 0").unwrap();
    let output = nsr.run(&["update", "HH-NSR-0001", "solar_panel_count=2"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        nsr.ok(&["show", "HH-NSR-0001"])
            .contains("solar_panel_count: 2")
    );
    assert!(
        nsr.ok(&[
            "export",
            "csv",
            "--register",
            "household",
            "--fields",
            "solar_panel_count"
        ])
        .contains("HH-NSR-0001,,ACTIVE,2")
    );
}

#[test]
fn a_generated_population_imports_cleanly_and_reimports_without_change() {
    let nsr = Nsr::new();
    let out = nsr.dir.path().join("population");
    nsr.ok(&[
        "generate",
        "--households",
        "40",
        "--seed",
        "7",
        "--out",
        path_str(&out),
    ]);
    let mut files: Vec<PathBuf> = Vec::new();
    for register in ["household", "individual"] {
        let file = out.join(format!("{register}.csv"));
        let report = nsr.ok(&["import", "csv", "--register", register, path_str(&file)]);
        assert!(
            report.contains(" 0 rejected") && report.contains(" 0 unchanged"),
            "{report}"
        );
        files.push(file);
    }
    for entry in std::fs::read_dir(&out).unwrap() {
        let file = entry.unwrap().path();
        let register = file.file_stem().unwrap().to_str().unwrap().to_owned();
        if register != "household" && register != "individual" {
            let report = nsr.ok(&["import", "csv", "--register", &register, path_str(&file)]);
            assert!(report.contains(" 0 rejected"), "{register}: {report}");
        }
    }
    for (register, file) in ["household", "individual"].iter().zip(&files) {
        let report = nsr.ok(&["import", "csv", "--register", register, path_str(file)]);
        assert!(
            report.contains(" 0 created, 0 updated") && report.contains("(0 change sets)"),
            "{report}"
        );
    }
    assert!(nsr.ok(&["audit", "verify"]).contains("intact"));
}

/// Starts `nsr serve` on a free port and returns the process and its address.
fn serve(nsr: &Nsr, extra: &[&str]) -> (std::process::Child, String) {
    let mut args = vec!["serve"];
    args.extend_from_slice(extra);
    let mut child = nsr
        .command(&args)
        .env("NSR_LISTEN", "127.0.0.1:0")
        .env("NSR_LOG_FILTER", "info")
        .env("NSR_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let address = loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("nsr serve exited before listening")
        };
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if event["fields"]["message"] == "nsr serving" {
            break event["fields"]["address"].as_str().unwrap().to_owned();
        }
    };
    (child, address)
}

fn http_get(address: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn serve_seeds_a_new_embedded_database_and_answers_health_readiness_and_metrics() {
    let nsr = Nsr::new();
    let (mut child, address) = serve(&nsr, &[]);
    assert_eq!(http_get(&address, "/healthz").0, 200);
    assert_eq!(http_get(&address, "/readyz").0, 200);
    let (status, metrics) = http_get(&address, "/metrics");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("nsr_records{register=\"individual\"} 15"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "nsr_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("nsr_audit_entries 1"), "{metrics}");

    let empty = Nsr::new();
    let (mut child, address) = serve(&empty, &["--no-sample"]);
    let (_, metrics) = http_get(&address, "/metrics");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!metrics.contains("nsr_records{"), "{metrics}");
}

#[test]
fn partners_are_added_listed_disabled_and_bad_definitions_refused() {
    let nsr = Nsr::new();
    let jwks = nsr.write(
        "spmis-jwks.json",
        r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#,
    );
    let added = nsr.ok(&[
        "partner",
        "add",
        "spmis.example.org",
        "--client-id",
        "spmis",
        "--scope",
        "registry.search",
        "--alg",
        "EdDSA",
        "--jwks",
        path_str(&jwks),
        "--callback-prefix",
        "https://spmis.example.org/dci/",
    ]);
    assert!(added.contains("partner spmis.example.org added"), "{added}");
    let secret = added
        .lines()
        .find_map(|l| l.strip_prefix("client secret (shown once; store it now): "))
        .expect("the generated secret is printed once");
    assert_eq!(secret.len(), 43, "32 random bytes, base64url");

    let listed = nsr.ok(&["partner", "list"]);
    assert!(listed.contains("spmis.example.org"), "{listed}");
    assert!(listed.contains("enabled"), "{listed}");
    assert!(!listed.contains(secret), "the list never shows the secret");
    assert!(!listed.contains("argon2"), "nor its hash");

    // Private key material, an unknown scope and an http URL elsewhere: all named, nothing added.
    let private = nsr.write(
        "private.json",
        r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}]}"#,
    );
    let refused = nsr.run(&[
        "partner",
        "add",
        "other.example.org",
        "--client-id",
        "other",
        "--scope",
        "registry.everything",
        "--alg",
        "EdDSA",
        "--jwks",
        path_str(&private),
        "--callback-prefix",
        "http://other.example.org/",
    ]);
    assert_eq!(refused.status.code(), Some(3));
    let problems = text(&refused.stdout);
    for expected in [
        "scopes: unknown scope",
        "keys: a key holds private material",
        "callback_prefixes",
    ] {
        assert!(
            problems.contains(expected),
            "{expected} missing: {problems}"
        );
    }
    assert!(!nsr.ok(&["partner", "list"]).contains("other.example.org"));

    assert!(
        nsr.ok(&["partner", "disable", "spmis.example.org"])
            .contains("disabled")
    );
    assert!(nsr.ok(&["partner", "list"]).contains("DISABLED"));
    assert_eq!(
        nsr.run(&["partner", "disable", "nobody.example.org"])
            .status
            .code(),
        Some(4)
    );
    assert!(nsr.ok(&["audit", "verify"]).contains("audit chain intact"));
}

fn http_call(
    address: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Runs `nsr user add NAME --role ROLES` with `password` on standard input.
fn add_user(nsr: &Nsr, name: &str, roles: &str, password: &str) -> Output {
    let mut child = nsr
        .command(&["user", "add", name, "--role", roles])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn users_are_added_with_a_password_from_stdin_listed_and_disabled() {
    let nsr = Nsr::new();
    let password = "correct horse battery staple";
    let added = add_user(&nsr, "ana", "enumerator,approver", password);
    assert!(added.status.success(), "{}", text(&added.stderr));
    assert!(
        text(&added.stdout).contains("user `ana` added with roles enumerator, approver"),
        "{}",
        text(&added.stdout)
    );
    let short = add_user(&nsr, "bob", "viewer", "short");
    assert_eq!(short.status.code(), Some(3));
    assert!(
        text(&short.stdout).contains("refused: password"),
        "{}",
        text(&short.stdout)
    );
    let again = add_user(&nsr, "ana", "viewer", password);
    assert_eq!(again.status.code(), Some(3));
    let bad_role = nsr.run(&["user", "add", "cat", "--role", "root"]);
    assert_eq!(bad_role.status.code(), Some(2));
    assert!(
        text(&bad_role.stderr).contains("not a role"),
        "{}",
        text(&bad_role.stderr)
    );

    let listed = nsr.ok(&["user", "list"]);
    assert!(
        listed.contains("ana")
            && listed.contains("enumerator,approver")
            && listed.contains("active"),
        "{listed}"
    );
    assert!(
        nsr.ok(&["user", "disable", "ana"])
            .contains("user `ana` disabled")
    );
    assert!(nsr.ok(&["user", "list"]).contains("disabled"));
    assert_eq!(
        nsr.run(&["user", "disable", "nobody"]).status.code(),
        Some(4)
    );
    assert!(
        nsr.ok(&["audit", "verify"])
            .contains("audit chain intact: 2 entries")
    );

    // Only the argon2id hash is stored, never the password.
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(nsr.db_file().parent().unwrap()).unwrap() {
        stored.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let needle = password.as_bytes();
    assert!(!stored.windows(needle.len()).any(|w| w == needle));
    assert!(stored.windows(9).any(|w| w == b"$argon2id"));
}

#[test]
fn update_goes_through_change_requests_and_waits_when_its_source_is_not_auto_approved() {
    let nsr = Nsr::new();
    nsr.ok(&["seed", "--sample"]);
    let output = nsr
        .command(&["update", "IND-NSR-0003", "occupation=Potter"])
        .env("NSR_AUTO_APPROVE_SOURCES", "[\"csv-import\"]")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("is pending approval"),
        "{}",
        text(&output.stdout)
    );
    assert!(!nsr.ok(&["show", "IND-NSR-0003"]).contains("Potter"));

    let file = nsr.write(
        "people.csv",
        "id,parent_id,gender\nIND-X1,HH-NSR-0001,MALE\n",
    );
    let output = nsr
        .command(&["import", "csv", "--register", "individual", path_str(&file)])
        .env("NSR_AUTO_APPROVE_SOURCES", "[\"cli\"]")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("auto_approve_sources"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn serve_signs_tokens_with_a_key_kept_owner_only_across_restarts() {
    let nsr = Nsr::new();
    let password = "correct horse battery staple";
    assert!(add_user(&nsr, "ana", "viewer", password).status.success());
    let (mut child, address) = serve(&nsr, &["--no-sample"]);
    let login = format!(r#"{{"username":"ana","password":"{password}"}}"#);
    let (status, body) = http_call(&address, "POST", "/api/v1/auth/login", None, &login);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status, 200, "{body}");
    let token: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();

    let key = nsr.db_file().parent().unwrap().join("token.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (mut child, address) = serve(&nsr, &["--no-sample"]);
    let (status, body) = http_call(&address, "GET", "/api/v1/registers", Some(&token), "");
    let (anonymous, _) = http_call(&address, "GET", "/api/v1/registers", None, "");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status, 200, "the token outlives the restart: {body}");
    assert_eq!(anonymous, 401);
}

#[test]
fn serve_refuses_a_consent_policy_naming_an_unknown_field_with_file_and_line() {
    let nsr = Nsr::new();
    let policies = nsr.dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("spmis.yaml"),
        "partners: [spmis.example.org]\npurposes: [social_protection]\nquery_types: [idtype-value]\n\
         consent:\n  required: true\n  scopes: [dci_sharing]\nmax_page_size: 10\nregisters:\n\
         \x20 individual: [first_name, shoe_size]\n",
    )
    .unwrap();
    let output = nsr
        .command(&["serve"])
        .env("NSR_LISTEN", "127.0.0.1:0")
        .env("NSR_CONSENT_POLICIES_DIR", &policies)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("spmis.yaml:9:") && stderr.contains("shoe_size"),
        "{stderr}"
    );
}

#[test]
fn serve_anchors_the_disclosure_chain_in_the_audit_chain_at_start() {
    let nsr = Nsr::new();
    std::fs::create_dir_all(nsr.db_file().parent().unwrap()).unwrap();
    let url = format!("sqlite://{}", nsr.db_file().display());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (head, chained) = runtime.block_on(async {
        let store = nsr::store::open(&url, 2).await.unwrap();
        let at = nsr::clock::Clock::now(&nsr::clock::SystemClock);
        for i in 0..2 {
            let entry = crate::consent::made_up_disclosure(at, &i.to_string(), Vec::new());
            store.insert_disclosure(entry.clone()).await.unwrap();
        }
        let chained = store.disclosure_audit_entries(0, 10).await.unwrap();
        (store.audit_head().await.unwrap(), chained)
    });
    assert_eq!(chained.len(), 2);

    let (mut child, address) = serve(&nsr, &["--no-sample"]);
    // The anchor is written by a task of its own, beside the listener: wait for it.
    let wanted = format!("nsr_audit_entries {}", head + 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut metrics = String::new();
    while std::time::Instant::now() < deadline && !metrics.contains(&wanted) {
        metrics = http_get(&address, "/metrics").1;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(metrics.contains(&wanted), "{metrics}");
    assert!(
        metrics.contains("nsr_disclosure_chain_entries 2"),
        "{metrics}"
    );

    let anchor = runtime.block_on(async {
        let store = nsr::store::open(&url, 2).await.unwrap();
        store.audit_entries(head, 10).await.unwrap()
    });
    assert_eq!(anchor.len(), 1);
    assert_eq!(anchor[0].action, "disclosure.anchor");
    let detail: serde_json::Value = serde_json::from_str(&anchor[0].detail).unwrap();
    assert_eq!(detail["seq"], 2);
    assert_eq!(detail["hash"], chained[1].hash.as_str());
    assert!(nsr.ok(&["audit", "verify"]).contains("intact"));
}
