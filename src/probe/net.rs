//! The first three stages: resolve the host, connect over TCP, and (for `wss://` and
//! `https://`) the TLS handshake with SNI, the chain checked against the system store
//! plus `--ca-file`, and the certificate's expiry. A [`Dialer`] then opens further
//! connections the same way for the later stages.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::target::Target;
use super::{Fail, Pass};

/// A byte stream the later stages speak HTTP/1.1 and WebSocket over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
/// A boxed [`Io`]: plain TCP or TLS.
pub type BoxIo = Box<dyn Io>;

/// A certificate expiring sooner than this is a warning.
const EXPIRY_WARNING_DAYS: i64 = 14;

/// Opens connections to the address that answered, with TLS when the target needs it.
#[derive(Clone)]
pub struct Dialer {
    addr: SocketAddr,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Dialer {
    /// A new connection, TLS included.
    pub async fn dial(&self) -> Result<BoxIo, String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect to {}: {e}", self.addr))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some((connector, name)) => connector
                .connect(name.clone(), tcp)
                .await
                .map(|s| Box::new(s) as BoxIo)
                .map_err(|e| format!("TLS handshake: {e}")),
        }
    }
}

/// `resolve`: the host's addresses.
pub async fn resolve(target: &Target) -> Result<(Vec<SocketAddr>, Pass), Fail> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| Fail::new(
            format!("`{}` does not resolve: {e}", target.host),
            "check the host name in the URL the client was given (client.websocket_url, server.public_url) and the DNS record",
        ))?
        .collect();
    if addrs.is_empty() {
        return Err(Fail::new(
            format!("`{}` resolves to no address", target.host),
            "add an A/AAAA record for the host in client.websocket_url",
        ));
    }
    let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    Ok((
        addrs,
        Pass::new(format!("{} -> {}", target.host, list.join(", "))),
    ))
}

/// `tcp`: the first address that accepts a connection.
pub async fn connect(addrs: &[SocketAddr]) -> Result<((TcpStream, SocketAddr), Pass), Fail> {
    let mut errors = Vec::new();
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(((s, *addr), Pass::new(format!("connected to {addr}")))),
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
    }
    Err(Fail::new(
        format!("no address accepted a connection ({})", errors.join("; ")),
        "nothing listens there: is the server running, and does server.listen (or the proxy in front) bind this address and port? A firewall or security group may drop it",
    ))
}

/// A dialer for plain `ws://` / `http://`.
pub fn plain(addr: SocketAddr) -> Dialer {
    Dialer { addr, tls: None }
}

/// `tls`: the handshake on the connection `tcp` opened; returns the dialer for later
/// connections.
pub async fn tls(
    target: &Target,
    tcp: TcpStream,
    addr: SocketAddr,
    ca_file: Option<&Path>,
) -> Result<(Dialer, Pass), Fail> {
    let roots = crate::tls::client_roots(ca_file).map_err(|e| {
        Fail::new(
            format!("cannot read the trust anchors: {e}"),
            "--ca-file must be a PEM file of CA certificates",
        )
    })?;
    let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Fail::new(format!("TLS setup: {e}"), "this is a bug in the probe"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // WebSocket upgrades are HTTP/1.1 only (RFC 8441 over h2 is not what clients use).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(target.host.clone()).map_err(|e| {
        Fail::new(
            format!("`{}` is not a valid TLS server name: {e}", target.host),
            "use a DNS name or an IP address",
        )
    })?;
    let stream = connector
        .connect(name.clone(), tcp)
        .await
        .map_err(|e| tls_failure(target, &e))?;
    let (_, session) = stream.get_ref();
    let version = session
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let leaf = session.peer_certificates().and_then(|c| c.first());
    let expiry = leaf.and_then(|c| crate::tls::not_after(c).ok());
    let dialer = Dialer {
        addr,
        tls: Some((connector, name)),
    };
    Ok((
        dialer,
        expiry_pass(&target.host, &version, expiry, Utc::now()),
    ))
}

fn expiry_pass(
    host: &str,
    version: &str,
    expiry: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Pass {
    let Some(not_after) = expiry else {
        return Pass::new(format!("{version}, certificate for {host} trusted"));
    };
    let days = (not_after - now).num_days();
    let detail = format!(
        "{version}, certificate for {host} trusted, expires {} ({days} days)",
        not_after.format("%Y-%m-%d")
    );
    if days < EXPIRY_WARNING_DAYS {
        Pass::warn(
            detail,
            format!(
                "the certificate expires in {days} days: renew it (server.tls.cert_file, or the proxy's certificate); portcullis reloads changed files without a restart"
            ),
        )
    } else {
        Pass::new(detail)
    }
}

/// Names the TLS failure and where to fix it.
fn tls_failure(target: &Target, e: &std::io::Error) -> Fail {
    use rustls::{CertificateError as C, Error as R};
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<R>());
    let hint = match inner {
        Some(R::InvalidCertificate(C::Expired | C::ExpiredContext { .. })) => {
            "the server's certificate has expired: renew it (server.tls.cert_file, or the proxy's certificate)".to_string()
        }
        Some(R::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. })) => {
            "the certificate is not valid yet: check the server's clock and the certificate's notBefore".to_string()
        }
        Some(R::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. })) => format!(
            "the certificate does not name `{}` (SNI): issue it for this host, or dial the name it was issued for",
            target.host
        ),
        Some(R::InvalidCertificate(C::UnknownIssuer)) => {
            "the chain does not lead to a trusted CA: serve the full chain (leaf then intermediates in server.tls.cert_file), or pass --ca-file for a private CA".to_string()
        }
        Some(R::InvalidMessage(_)) => {
            "the port does not speak TLS: dial ws:// / http://, or put TLS in front (server.tls)".to_string()
        }
        _ => "the TLS handshake failed: check the certificate and key (server.tls.cert_file, server.tls.key_file) or the proxy's TLS settings".to_string(),
    };
    Fail::new(
        format!("TLS handshake with {} failed: {e}", target.host),
        hint,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_expiring_within_14_days_is_a_warning() {
        let now = Utc::now();
        let soon = expiry_pass("h", "TLSv1_3", Some(now + chrono::Duration::days(5)), now);
        assert!(soon.warning.as_deref().unwrap_or("").contains("renew"));
        let later = expiry_pass("h", "TLSv1_3", Some(now + chrono::Duration::days(60)), now);
        assert!(later.warning.is_none(), "{:?}", later.warning);
    }
}
