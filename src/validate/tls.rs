//! `[server.tls]` rules: both files parse, the key is the certificate's, and the
//! certificate is not expired (error) or about to expire (warning, 14 days), so a listener
//! that every client would refuse never boots.

use chrono::{TimeDelta, Utc};

use super::ctx::Ctx;
use crate::keypath::kp;
use crate::tls::{PemError, certified_key, not_after, read_certs};

/// A certificate expiring within this many days is reported.
const EXPIRY_WARNING_DAYS: i64 = 14;

/// Runs the TLS rules.
pub fn check(cx: &mut Ctx) {
    let Some(tls) = &cx.raw.server.tls else {
        return;
    };
    let cert = cx.config_dir.join(&tls.cert_file);
    let key = cx.config_dir.join(&tls.key_file);
    match certified_key(&cert, &key) {
        Ok(_) => {}
        Err(error) => {
            let (code, at, hint) = match &error {
                PemError::Read { path, .. } => (
                    "E_TLS_FILE",
                    if *path == cert {
                        "server.tls.cert_file"
                    } else {
                        "server.tls.key_file"
                    },
                    "the path is relative to the config directory; the server must be able to read it",
                ),
                PemError::Certificate { .. } => (
                    "E_TLS_CERT",
                    "server.tls.cert_file",
                    "give the certificate chain as PEM (BEGIN CERTIFICATE), server certificate first",
                ),
                PemError::Key { .. } => (
                    "E_TLS_KEY",
                    "server.tls.key_file",
                    "give the private key as PEM (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
                ),
                PemError::KeyMismatch { .. } => (
                    "E_TLS_KEY_MISMATCH",
                    "server.tls.key_file",
                    "use the key the certificate was issued for (compare `openssl x509 -pubkey` with `openssl pkey -pubout`)",
                ),
            };
            cx.error(code, kp(at), error.to_string(), hint);
            return;
        }
    }
    let Some(end) = read_certs(&cert)
        .ok()
        .and_then(|chain| chain.first().and_then(|c| not_after(c).ok()))
    else {
        return;
    };
    let left = end - Utc::now();
    if left <= TimeDelta::zero() {
        cx.error(
            "E_TLS_CERT_EXPIRED",
            kp("server.tls.cert_file"),
            format!(
                "the certificate in {} expired on {}: every client would refuse it",
                cert.display(),
                end.format("%Y-%m-%d")
            ),
            "renew the certificate (the server re-reads the files when they change)",
        );
    } else if left < TimeDelta::days(EXPIRY_WARNING_DAYS) {
        cx.warn(
            "W_TLS_CERT_EXPIRING",
            kp("server.tls.cert_file"),
            format!(
                "the certificate in {} expires on {}, in less than {EXPIRY_WARNING_DAYS} days",
                cert.display(),
                end.format("%Y-%m-%d")
            ),
            "renew it now; the server picks up new files without a restart",
        );
    }
}
