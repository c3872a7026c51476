//! Keeping the hub's memory small on a 1 GB board.

/// Caps glibc's malloc arenas at two. By default glibc gives each busy thread an arena of its
/// own (up to eight per core) and each keeps the memory it has freed; the hub's threads (tokio
/// workers, the history writer, the embedded broker's) would hold several megabytes that way
/// for nothing. Elsewhere (musl, other systems) this does nothing.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before the threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// How often freed memory is handed back to the system.
pub const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Hands the pages glibc's arenas hold free back to the system. glibc returns freed memory
/// only from the top of its main heap, so a long-running hub whose buffers (MQTT batches,
/// history batches, uplink pages) come and go at different sizes keeps the high-water mark of
/// each arena resident: a ten-park soak grew 10 % in half an hour with a quarter of its heap
/// free, and one `malloc_trim` gave back 12.5 MB of 74. No crate does this; it is one call.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the system; it takes the arenas' locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trims every `TRIM_EVERY` until `stop`, off the async workers (it walks the arenas).
pub async fn trim_task(stop: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {
                let _ = tokio::task::spawn_blocking(trim).await;
            }
        }
    }
}
