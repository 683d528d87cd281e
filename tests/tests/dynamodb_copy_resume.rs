//! `nls dynamodb export` and `import` interrupted and resumed (docs/runbooks/restore-from-backup.md),
//! on moto: a run stopped after a few pages (`--max-pages`, what a killed run leaves behind:
//! the progress file, and for an export possibly half a page after it) continues with
//! `--resume`, and the result holds every item exactly once.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use nls_tests::moto::{MotoServer, aws_env};
use nls_tests::nls_server::{TempDir, nls_binary, run_nls};
use serde_json::{Value, json};

const ITEMS: usize = 60;

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// `nls dynamodb ARGS` against moto; (success, stdout JSON or Null, stderr).
fn dynamodb(moto: &MotoServer, args: &[&str]) -> (bool, Value, String) {
    let out = Command::new(nls_binary())
        .arg("dynamodb")
        .args(args)
        .envs(aws_env(&moto.endpoint))
        .output()
        .expect("run nls dynamodb");
    let stdout = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn ok(moto: &MotoServer, args: &[&str]) -> Value {
    let (success, report, stderr) = dynamodb(moto, args);
    assert!(success, "nls dynamodb {args:?}: {stderr}");
    report
}

/// The (pk, sk) of every line of an export file; panics on a line that is not an item.
fn keys_in(file: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|line| {
            let item: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            let s = |name: &str| item["Item"][name]["S"].as_str().unwrap().to_owned();
            (s("pk"), s("sk"))
        })
        .collect()
}

#[test]
fn an_interrupted_export_and_import_resume_to_every_item_exactly_once() {
    let moto = MotoServer::shared();
    let dir = TempDir::new("dynamodb-copy-resume");
    let (source, target) =
        (format!("nls-copy-src-{}", std::process::id()), format!("nls-copy-dst-{}", std::process::id()));
    for table in [&source, &target] {
        run_nls(&["dynamodb", "create-table", "--table", table], &aws_env(&moto.endpoint));
    }
    let seed = dir.path().join("seed.jsonl");
    let lines: Vec<String> = (0..ITEMS)
        .map(|i| json!({"Item": {"pk": {"S": format!("test#{i:03}")}, "sk": {"S": "item"}, "n": {"N": i.to_string()}}}).to_string())
        .collect();
    std::fs::write(&seed, lines.join("\n") + "\n").unwrap();
    let seeded: BTreeSet<(String, String)> = keys_in(&seed).into_iter().collect();

    // An import stopped after one batch of 25, then resumed.
    let first = ok(moto, &["import", "--table", &source, "--in", path(&seed), "--max-pages", "1"]);
    assert_eq!((first["items"].as_u64(), first["complete"].as_bool()), (Some(25), Some(false)), "{first}");
    assert!(dir.path().join("seed.jsonl.progress").exists(), "the progress file stays for --resume");
    let rest = ok(moto, &["import", "--table", &source, "--in", path(&seed), "--resume"]);
    assert_eq!(
        (rest["items"].as_u64(), rest["complete"].as_bool()),
        (Some(ITEMS as u64), Some(true)),
        "{rest}"
    );
    assert!(!dir.path().join("seed.jsonl.progress").exists());

    // An export stopped after three pages of 7 items...
    let out = dir.path().join("export.jsonl");
    let args = ["export", "--table", &source, "--out", path(&out), "--page-size", "7"];
    let partial = ok(moto, &[&args[..], &["--max-pages", "3"]].concat());
    assert_eq!(
        (partial["items"].as_u64(), partial["complete"].as_bool()),
        (Some(21), Some(false)),
        "{partial}"
    );
    assert_eq!(keys_in(&out).len(), 21);
    // ... killed while writing its fourth page: half a line after the saved position.
    let mut text = std::fs::read_to_string(&out).unwrap();
    text.push_str(r#"{"Item":{"pk":{"S":"test#0"#);
    std::fs::write(&out, text).unwrap();
    // Resuming without a progress file is refused; with it, the export completes.
    let (refused, _, stderr) = dynamodb(
        moto,
        &["export", "--table", &source, "--out", path(&dir.path().join("none.jsonl")), "--resume"],
    );
    assert!(!refused && stderr.contains("no progress to resume from"), "{stderr}");
    let done = ok(moto, &[&args[..], &["--resume"]].concat());
    assert_eq!(
        (done["items"].as_u64(), done["complete"].as_bool()),
        (Some(ITEMS as u64), Some(true)),
        "{done}"
    );
    let exported = keys_in(&out);
    let unique: BTreeSet<_> = exported.iter().cloned().collect();
    assert_eq!(exported.len(), ITEMS, "no duplicates and nothing missing");
    assert_eq!(unique, seeded);

    // The export imports into another table (interrupted and resumed too), item for item.
    ok(moto, &["import", "--table", &target, "--in", path(&out), "--max-pages", "2"]);
    ok(moto, &["import", "--table", &target, "--in", path(&out), "--resume"]);
    let copy = dir.path().join("copy.jsonl");
    ok(moto, &["export", "--table", &target, "--out", path(&copy)]);
    let copied = keys_in(&copy);
    assert_eq!(copied.len(), ITEMS);
    assert_eq!(copied.into_iter().collect::<BTreeSet<_>>(), seeded);
}
