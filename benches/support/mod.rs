//! What several benchmarks share.

// Each benchmark is a crate of its own and uses some of these.
#![allow(dead_code)]

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

/// A TCP port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
