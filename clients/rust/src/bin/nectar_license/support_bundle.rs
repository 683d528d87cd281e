//! `nectar-license support-bundle --out FILE`: what support needs, in one tar.gz, with nothing
//! secret in it. Every text that goes in passes [`redact`], which replaces anything shaped like
//! a license key, a JWS, a bearer token or an API key, and the configured key itself.

use std::io::Write;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde::Serialize;

use crate::diagnose::DiagnoseReport;
use crate::resolved_config::RedactedConfig;

/// The CLI's own log in the data dir: one line per command and its result.
pub const CLI_LOG: &str = "nectar-license.log";
const LOG_TAIL_LINES: usize = 200;

pub struct BundleInput<'a> {
    pub diagnose: &'a DiagnoseReport,
    pub diagnose_text: String,
    pub status_json: Option<String>,
    pub config: RedactedConfig,
    pub data_dir: Option<&'a Path>,
    pub app_log: Option<&'a Path>,
    /// The configured key, removed wherever it appears even if unshaped.
    pub key: Option<&'a str>,
}

#[derive(Serialize)]
struct Versions {
    nectar_license: &'static str,
    os: &'static str,
    arch: &'static str,
    family: &'static str,
}

pub fn write_bundle(out: &Path, input: &BundleInput<'_>) -> std::io::Result<Vec<String>> {
    let mut files: Vec<(String, String)> = vec![
        ("diagnose.txt".into(), input.diagnose_text.clone()),
        ("diagnose.json".into(), json(input.diagnose)),
        ("config.json".into(), json(&input.config)),
        (
            "versions.json".into(),
            json(&Versions {
                nectar_license: env!("CARGO_PKG_VERSION"),
                os: std::env::consts::OS,
                arch: std::env::consts::ARCH,
                family: std::env::consts::FAMILY,
            }),
        ),
    ];
    if let Some(status) = &input.status_json {
        files.push(("status.json".into(), status.clone()));
    }
    if let Some(dir) = input.data_dir {
        if let Some(tail) = tail(&dir.join(CLI_LOG)) {
            files.push(("logs/nectar-license.log".into(), tail));
        }
        let listing = list_dir(dir);
        files.push(("data-dir-listing.txt".into(), listing));
    }
    if let Some(log) = input.app_log {
        let text = tail(log).unwrap_or_else(|| format!("(could not read {})\n", log.display()));
        files.push(("logs/app.log".into(), text));
    }

    let file = std::fs::File::create(out)?;
    let mut archive = tar::Builder::new(GzEncoder::new(file, Compression::default()));
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let mut names = Vec::new();
    for (name, text) in files {
        let text = redact(&text, input.key);
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(now);
        header.set_cksum();
        archive.append_data(&mut header, format!("nectar-support/{name}"), text.as_bytes())?;
        names.push(name);
    }
    archive.into_inner()?.finish()?.flush()?;
    Ok(names)
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

/// The last lines of a log file.
fn tail(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    Some(lines[start..].join("\n") + "\n")
}

/// Names, sizes and modes in the data dir (not contents: the cache holds the receipt).
fn list_dir(dir: &Path) -> String {
    let mut out = String::new();
    let mut walk = vec![dir.to_owned()];
    while let Some(d) = walk.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            out.push_str(&format!("{}: unreadable\n", d.display()));
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let meta = entry.metadata().ok();
            let rel = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
            match meta {
                Some(m) if m.is_dir() => {
                    out.push_str(&format!("{rel}/\n"));
                    walk.push(path);
                }
                Some(m) => out.push_str(&format!("{rel} {} bytes\n", m.len())),
                None => out.push_str(&format!("{rel} ?\n")),
            }
        }
    }
    out
}

/// Removes secrets from `text`: the configured key (anywhere), then every token shaped like an
/// NLS key (`NLS-...`), a JWS (`xxx.yyy.zzz` of base64url), a bearer token, or an API key
/// (`nls_...`).
pub fn redact(text: &str, key: Option<&str>) -> String {
    let mut text = text.to_owned();
    if let Some(key) = key.map(str::trim).filter(|k| k.len() >= 8) {
        text = text.replace(key, "[license key removed]");
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let start = rest.find(|c: char| is_token_char(c)).unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(|c: char| !is_token_char(c)).unwrap_or(rest.len());
        let token = &rest[..end];
        out.push_str(&redact_token(token));
        rest = &rest[end..];
    }
    // "Bearer <anything>"
    let mut result = String::with_capacity(out.len());
    let mut parts = out.split("Bearer ").peekable();
    if let Some(first) = parts.next() {
        result.push_str(first);
    }
    for part in parts {
        result.push_str("Bearer [removed]");
        let end = part.find(|c: char| c.is_whitespace() || c == '"').unwrap_or(part.len());
        result.push_str(&part[end..]);
    }
    result
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn redact_token(token: &str) -> String {
    if token.starts_with("NLS-") && token.len() > 20 {
        let checksum = token.rsplit('-').next().unwrap_or("");
        return format!("NLS-[removed]-{checksum}");
    }
    if token.starts_with("nls_") && token.len() > 20 {
        return "nls_[removed]".to_owned();
    }
    let segments: Vec<&str> = token.split('.').collect();
    if segments.len() == 3 && segments.iter().all(|s| s.len() >= 8) {
        return "[jws removed]".to_owned();
    }
    token.to_owned()
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn removes_keys_tokens_and_bearers_but_keeps_the_checksum() {
        let jws = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJsaWNfMSJ9.c2lnbmF0dXJlc2lnbmF0dXJl";
        let key = format!("NLS-{jws}-0a1b2c3d");
        let text = format!(
            "key={key} raw {jws} auth: Bearer abc123secret api nls_k1_0123456789abcdef0123 host example.com v1.2.3"
        );
        let out = redact(&text, None);
        assert!(!out.contains(jws) && !out.contains("abc123secret") && !out.contains("0123456789abcdef0123"));
        assert!(out.contains("NLS-[removed]-0a1b2c3d"), "{out}");
        assert!(out.contains("example.com v1.2.3"), "ordinary dotted words stay: {out}");
        assert_eq!(
            redact("odd key: x-y-z-secretvalue", Some("x-y-z-secretvalue")),
            "odd key: [license key removed]"
        );
    }
}
