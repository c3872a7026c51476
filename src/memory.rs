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
