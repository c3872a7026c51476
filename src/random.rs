//! Secrets made up on the spot: the embedded broker's own login, the demo's API token and
//! webhook secret.

/// `bytes` random bytes from the OS, in hex.
pub fn hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(hex::encode(buf))
}
