//! `nls keys push-jwks`: sends a JWKS to the edges by hand (`PUT {edge}/v1/internal/jwks`),
//! for origins that do not push it themselves at start-up (the API Lambda after a rotation in
//! Secrets Manager), or after a push failed (docs/edge.md, "Key rotation at the edge").

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use nls_core::key_ring::KeyRing;
use nls_edge_push::HttpStatusPublisher;

use crate::serve::EDGE_PUSH_TOKEN_VAR;

#[derive(Debug, clap::Args)]
pub struct PushJwksArgs {
    /// The JWKS to push (e.g. saved from the origin's `/.well-known/jwks.json`); `-`: stdin.
    #[arg(long, value_name = "FILE")]
    pub jwks: PathBuf,
    /// An edge's base URL; repeat for several. The token is read from NLS_EDGE_PUSH_TOKEN.
    #[arg(long = "edge-url", value_name = "URL", required = true)]
    pub edge_urls: Vec<String>,
}

pub fn run(args: PushJwksArgs) -> Result<ExitCode, String> {
    let text = if args.jwks.as_os_str() == "-" {
        let mut buf = String::new();
        std::io::stdin().take(1024 * 1024).read_to_string(&mut buf).map_err(|e| format!("stdin: {e}"))?;
        buf
    } else {
        std::fs::read_to_string(&args.jwks).map_err(|e| format!("{}: {e}", args.jwks.display()))?
    };
    // Refuse locally what every edge would refuse: an empty ring, a non-Ed25519 key.
    let ring = KeyRing::parse_jwks_json(text.trim()).map_err(|e| format!("{}: {e}", args.jwks.display()))?;
    let jwks_json = serde_json::to_string(&ring.jwks()).map_err(|e| e.to_string())?;
    let token = std::env::var(EDGE_PUSH_TOKEN_VAR)
        .ok()
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| format!("set {EDGE_PUSH_TOKEN_VAR} to the edges' service token"))?;
    let publisher = HttpStatusPublisher::new(&args.edge_urls, &token).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(publisher.publish_jwks(&jwks_json)).map_err(|e| e.to_string())?;
    let kids: Vec<String> = ring.jwks().keys.into_iter().filter_map(|k| k.kid).collect();
    println!("{}", serde_json::json!({"pushed_to": publisher.edges(), "kids": kids}));
    Ok(ExitCode::SUCCESS)
}
