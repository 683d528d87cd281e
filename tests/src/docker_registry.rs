//! The CNCF registry (Debian's `docker-registry`) with token auth pointed at an NLS origin, a
//! hand-written OCI image layout, and `skopeo` without stored credentials: what the registry
//! tests need to judge tokens with the real registry. tests/run.sh installs both tools.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::free_port::free_port;
use crate::http_client::{HttpResponse, request};

fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The registry process, stopped on drop. Its storage lives in `dir/storage`, so a registry
/// started again on the same `dir` (with another bundle) keeps the images.
pub struct Registry {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Registry {
    /// Starts the registry with tokens from `nls_port`'s `/v1/registry/token`, trusting the
    /// certificates in `cert_bundle`, for `service` and `issuer`.
    pub fn start(dir: &Path, nls_port: u16, cert_bundle: &Path, service: &str, issuer: &str) -> Self {
        let port = free_port();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: {secret}\nauth:\n  token:\n\
                 \x20   realm: http://127.0.0.1:{nls_port}/v1/registry/token\n    service: {service}\n\
                 \x20   issuer: {issuer}\n    rootcertbundle: {cert}\n",
                storage = dir.join("storage").display(),
                secret = random_hex(),
                cert = cert_bundle.display(),
            ),
        )
        .unwrap();
        let log = dir.join("registry.log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap()))
            .spawn()
            .expect("docker-registry on PATH (tests/run.sh installs it)");
        let registry = Self { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if request(port, "GET", "/v2/", &[], b"").is_ok_and(|r| r.status == 401) {
                return registry;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the registry did not start:\n{}", std::fs::read_to_string(&registry.log).unwrap_or_default());
    }

    pub fn url(&self, repository: &str) -> String {
        format!("docker://127.0.0.1:{}/{repository}:v1", self.port)
    }

    /// `GET /v2/<repository>/tags/list` with a bearer token: 200 only when the registry trusts it.
    pub fn tags_with_token(&self, repository: &str, token: &str) -> HttpResponse {
        let auth = format!("Bearer {token}");
        request(self.port, "GET", &format!("/v2/{repository}/tags/list"), &[("authorization", &auth)], b"")
            .unwrap()
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().rev().take(15).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let digest = format!("sha256:{}", sha256_hex(bytes));
    std::fs::write(layout.join("blobs/sha256").join(&digest[7..]), bytes).unwrap();
    (digest, bytes.len())
}

/// An OCI image layout in `dir/image` with one small layer, tagged `v1`, written by hand.
pub fn build_oci_layout(dir: &Path) -> PathBuf {
    let layout = dir.join("image");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let content = dir.join("content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("hello.txt"), format!("hello from nls {}\n", random_hex())).unwrap();
    let tar = dir.join("layer.tar");
    let ok =
        Command::new("tar").arg("-C").arg(&content).arg("-cf").arg(&tar).arg("hello.txt").status().unwrap();
    assert!(ok.success(), "tar");
    let ok = Command::new("gzip").arg("-n").arg("-k").arg("-f").arg(&tar).status().unwrap();
    assert!(ok.success(), "gzip");
    let diff_id = format!("sha256:{}", sha256_hex(&std::fs::read(&tar).unwrap()));
    let (layer_digest, layer_size) = write_blob(&layout, &std::fs::read(dir.join("layer.tar.gz")).unwrap());
    let config = json!({"architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}});
    let (config_digest, config_size) = write_blob(&layout, config.to_string().as_bytes());
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}]});
    let (manifest_digest, manifest_size) = write_blob(&layout, manifest.to_string().as_bytes());
    let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": "v1"}}]});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    layout
}

/// Runs skopeo with no stored credentials (HOME is `home`); (success, stderr).
pub fn skopeo(home: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("skopeo")
        .args(args)
        .env("HOME", home)
        .env("REGISTRY_AUTH_FILE", home.join("no-auth.json"))
        .env("XDG_RUNTIME_DIR", home)
        .output()
        .expect("skopeo on PATH (tests/run.sh installs it)");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}
