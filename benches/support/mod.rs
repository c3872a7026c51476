//! What several benchmarks share.

use std::sync::Arc;

use tokio_rustls::rustls;

/// A reqwest client for the hub's plain-HTTP API on loopback. The crate builds reqwest without
/// a crypto provider of its own (ring is configured where TLS is used), so one is given here.
pub fn plain_client(pool: usize) -> reqwest::Client {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .pool_max_idle_per_host(pool)
        .build()
        .expect("a plain HTTP client builds")
}
