//! The local outbox: `nls serve`'s mailer when no SES is configured. Each email becomes one
//! RFC 5322 `.eml` file (multipart/alternative, text and HTML) in `<data-dir>/outbox/`, so a
//! developer can open what would have been sent in any mail client.
//!
//! Files appear whole or not at all: the message is written to a hidden temporary file in the
//! same directory and renamed into place. Key-delivery emails hold license keys, so the files
//! are readable by their owner only (0600 on Unix).

use std::fmt::Write as _;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use chrono::Utc;
use nls_core::ports::{MailError, Mailer, OutgoingEmail};

pub const DEFAULT_FROM: &str = "Nectar Licensing <no-reply@nls.localhost>";

#[derive(Debug, Clone)]
pub struct OutboxMailer {
    dir: PathBuf,
    from: String,
}

impl OutboxMailer {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), from: DEFAULT_FROM.to_owned() }
    }

    /// Writes `email` and returns the file name, which is also the message id.
    pub fn write_message(&self, email: &OutgoingEmail) -> Result<String, MailError> {
        if email.to.trim().is_empty() || email.to.contains(['\r', '\n']) {
            return Err(MailError::Rejected(format!("bad recipient {:?}", email.to)));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| unavailable(&self.dir, e))?;
        let now = Utc::now();
        let stem = format!("{}-{}", now.format("%Y%m%dT%H%M%S%.3fZ"), random_hex());
        let file_name = format!("{stem}.eml");
        let message = render_eml(email, &self.from, &stem, now);
        let temp_path = self.dir.join(format!(".{stem}.tmp"));
        let final_path = self.dir.join(&file_name);
        let written = create_private_file(&temp_path)
            .and_then(|mut f| f.write_all(message.as_bytes()).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&temp_path, &final_path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp_path);
            return Err(unavailable(&final_path, e));
        }
        Ok(file_name)
    }
}

/// A new file only its owner can read: the message holds license keys.
fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn unavailable(path: &Path, e: std::io::Error) -> MailError {
    MailError::Unavailable(format!("outbox {}: {e}", path.display()))
}

fn random_hex() -> String {
    let mut bytes = [0u8; 6];
    // The name only has to be unique in the directory; the clock to the millisecond plus 48
    // random bits is plenty, and a failing random source is not worth failing the mail for.
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

impl Mailer for OutboxMailer {
    // The `async_trait` shape of `Mailer::send`, written out so this crate needs no macro.
    fn send<'life0, 'life1, 'async_trait>(
        &'life0 self,
        email: &'life1 OutgoingEmail,
    ) -> Pin<Box<dyn Future<Output = Result<String, MailError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        let mailer = self.clone();
        let email = email.clone();
        Box::pin(async move {
            // File I/O blocks: keep it off the async workers.
            tokio::task::spawn_blocking(move || mailer.write_message(&email))
                .await
                .map_err(|e| MailError::Unavailable(format!("outbox writer stopped: {e}")))?
        })
    }
}

/// The whole message, CRLF line endings, bodies quoted-printable (a license key is one long
/// line, longer than the 998 characters RFC 5322 allows).
pub fn render_eml(email: &OutgoingEmail, from: &str, stem: &str, at: chrono::DateTime<Utc>) -> String {
    let boundary = format!("=_nls_{stem}");
    let mut out = String::new();
    let mut header = |name: &str, value: &str| {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    };
    header("From", &one_line(from));
    header("To", &one_line(&email.to));
    header("Subject", &encode_header_value(&one_line(&email.subject)));
    header("Date", &at.to_rfc2822());
    header("Message-ID", &format!("<{stem}@nls.localhost>"));
    header("MIME-Version", "1.0");
    header("Content-Type", &format!("multipart/alternative; boundary=\"{boundary}\""));
    out.push_str("\r\n");
    for (content_type, body) in [("text/plain", &email.text_body), ("text/html", &email.html_body)] {
        out.push_str(&format!("--{boundary}\r\n"));
        out.push_str(&format!("Content-Type: {content_type}; charset=utf-8\r\n"));
        out.push_str("Content-Transfer-Encoding: quoted-printable\r\n\r\n");
        out.push_str(&quoted_printable(body));
        out.push_str("\r\n");
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out
}

/// Header values may not carry line breaks (header injection).
fn one_line(value: &str) -> String {
    value.split(['\r', '\n']).map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ")
}

/// RFC 2047 `Q` encoding when the value is not plain ASCII.
fn encode_header_value(value: &str) -> String {
    if value.bytes().all(|b| (32..127).contains(&b)) {
        return value.to_owned();
    }
    let mut encoded = String::from("=?utf-8?Q?");
    for b in value.bytes() {
        match b {
            b' ' => encoded.push('_'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b',' | b'-' | b'!' | b'(' | b')' => {
                encoded.push(b as char)
            }
            _ => {
                let _ = write!(encoded, "={b:02X}");
            }
        }
    }
    encoded.push_str("?=");
    encoded
}

/// RFC 2045 quoted-printable with CRLF hard breaks and soft breaks before 76 characters.
fn quoted_printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        let line = line.strip_suffix('\r').unwrap_or(line);
        let bytes = line.as_bytes();
        let mut width = 0;
        for (j, &b) in bytes.iter().enumerate() {
            let last = j + 1 == bytes.len();
            let literal = matches!(b, 33..=60 | 62..=126) || (matches!(b, b' ' | b'\t') && !last);
            let piece_len = if literal { 1 } else { 3 };
            if width + piece_len > 75 {
                out.push_str("=\r\n");
                width = 0;
            }
            if literal {
                out.push(b as char);
            } else {
                let _ = write!(out, "={b:02X}");
            }
            width += piece_len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> OutgoingEmail {
        OutgoingEmail {
            to: "ada@example.com".to_owned(),
            subject: "Your Nectar license key (pro) — ✓".to_owned(),
            text_body: format!("Hello Ada,\n\nNLS-{}-0123abcd\n\nÜbrigens = equals\n", "a".repeat(1500)),
            html_body: "<p>Hello Ada</p>".to_owned(),
        }
    }

    fn decode_qp(text: &str) -> String {
        let joined = text.replace("=\r\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'=' {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
                out.push(u8::from_str_radix(hex, 16).expect("hex"));
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).expect("utf-8").replace("\r\n", "\n")
    }

    #[test]
    fn messages_are_rfc5322_and_round_trip() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z").expect("time").to_utc();
        let eml = render_eml(&email(), DEFAULT_FROM, "stem1", at);
        assert!(eml.lines().all(|l| l.len() <= 998), "no line over 998 characters");
        assert!(eml.split("\r\n").all(|l| l.len() <= 998));
        assert!(!eml.replace("\r\n", "").contains('\n'), "CRLF only");
        assert!(eml.contains("To: ada@example.com\r\n"));
        assert!(eml.contains("Subject: =?utf-8?Q?Your_Nectar_license_key_(pro)_=E2=80=94_=E2=9C=93?=\r\n"));
        assert!(eml.contains("Date: Mon, 30 Nov 2026 12:00:00 +0000\r\n"));
        assert!(eml.contains("Content-Type: multipart/alternative; boundary=\"=_nls_stem1\""));
        let parts: Vec<&str> = eml.split("--=_nls_stem1").collect();
        assert_eq!(parts.len(), 4, "preamble, text, html, close");
        let text_body = parts[1].split_once("\r\n\r\n").expect("headers, then body").1;
        assert_eq!(decode_qp(text_body).trim_end(), email().text_body.trim_end());
    }

    #[test]
    fn header_injection_is_flattened() {
        let at = Utc::now();
        let sneaky = OutgoingEmail { subject: "hi\r\nBcc: victim@example.com".to_owned(), ..email() };
        let eml = render_eml(&sneaky, DEFAULT_FROM, "s", at);
        assert!(!eml.contains("\r\nBcc:"));
        assert!(eml.contains("Subject: hi Bcc: victim@example.com\r\n"));
    }

    #[test]
    fn sends_write_whole_files_named_by_message_id() {
        let dir = std::env::temp_dir().join(format!("nls-outbox-test-{}", random_hex()));
        let mailer = OutboxMailer::new(&dir);
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let first = runtime.block_on(mailer.send(&email())).expect("sent");
        let second = runtime.block_on(mailer.send(&email())).expect("sent");
        assert_ne!(first, second);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("outbox exists")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut expected = vec![first.clone(), second];
        expected.sort();
        assert_eq!(names, expected, "no temporary files remain");
        let content = std::fs::read_to_string(dir.join(&first)).expect("readable");
        assert!(content.starts_with("From: "));
        // Issue 19 item 7: key emails were written 0644, readable by every local user.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(&first)).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "outbox files are owner-only");
        }
        let bad = OutgoingEmail { to: "a@example.com\r\nBcc: b@example.com".to_owned(), ..email() };
        assert!(matches!(runtime.block_on(mailer.send(&bad)), Err(MailError::Rejected(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
