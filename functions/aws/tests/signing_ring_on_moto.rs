//! The Lambdas' signing ring from Secrets Manager versions, on moto: a rotation
//! (`put-secret-value`) makes the new key the signer and keeps the previous one as a verifier;
//! removing the `AWSPREVIOUS` label retires it (docs/operations.md, "Key rotation on AWS").

mod moto_support;

use moto_support::{MotoServer, sdk_config};
use nls_aws::secrets::{PREVIOUS_STAGE, fetch_signing_ring};
use nls_core::key_ring::SigningKey;

fn private_jwk(key: &SigningKey) -> String {
    serde_json::to_string(&key.to_private_jwk()).expect("a JWK")
}

#[tokio::test]
async fn rotation_and_retirement_through_secret_versions() {
    let client = aws_sdk_secretsmanager::Client::new(&sdk_config(MotoServer::shared()).await);
    let secret = "nls/test/signing-ring";
    let (old, new) = (SigningKey::generate(), SigningKey::generate());
    client.create_secret().name(secret).secret_string(private_jwk(&old)).send().await.expect("create");

    let ring = fetch_signing_ring(&client, secret).await.expect("one version");
    assert_eq!(ring.signer().map(|s| s.kid.clone()), Some(old.kid.clone()));
    assert_eq!(ring.jwks().keys.len(), 1);

    client
        .put_secret_value()
        .secret_id(secret)
        .secret_string(private_jwk(&new))
        .send()
        .await
        .expect("rotate");
    let ring = fetch_signing_ring(&client, secret).await.expect("two versions");
    assert_eq!(ring.signer().map(|s| s.kid.clone()), Some(new.kid.clone()), "the new version signs");
    assert!(ring.verifier(&old.kid).is_some(), "the previous version still verifies");

    let versions = client.list_secret_version_ids().secret_id(secret).send().await.expect("versions");
    let previous = versions
        .versions()
        .iter()
        .find(|v| v.version_stages().iter().any(|s| s == PREVIOUS_STAGE))
        .and_then(|v| v.version_id())
        .expect("an AWSPREVIOUS version")
        .to_owned();
    client
        .update_secret_version_stage()
        .secret_id(secret)
        .version_stage(PREVIOUS_STAGE)
        .remove_from_version_id(previous)
        .send()
        .await
        .expect("retire");
    let ring = fetch_signing_ring(&client, secret).await.expect("one labelled version");
    assert!(ring.verifier(&old.kid).is_none(), "the retired key no longer verifies");
    assert_eq!(ring.jwks().keys.len(), 1);
}
